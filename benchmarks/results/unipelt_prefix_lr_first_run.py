import json, sys, peft_autoconfig
from peft_autoconfig import UniPELTConfig
from peft_autoconfig.search.recipe import resolve_model
from peft_autoconfig.training.runner import RunConfig, run
variants = {
    "default": (dict(), None),
    "prefix_lr_1e-3": (dict(), {"prefix": 1e-3}),
    "flat_prefix": (dict(prefix_projection_size=0), None),
}
for name, (cfg, rates) in variants.items():
    r = run(RunConfig(resolve_model("minilm"), "rotten_tomatoes", UniPELTConfig(task_type="SEQ_CLS", **cfg), train_subset=2000,
                      max_steps=125, batch_size=16, max_length=64, eval_subset=400, learning_rates=rates, show_progress=False))
    print(json.dumps({"variant": name, "accuracy": r.metric_value, "eval_loss": r.metrics.get("loss"), "train_loss": r.train_loss,
                      "first_losses": r.loss_history[:3], "last_losses": r.loss_history[-3:]}), flush=True)
