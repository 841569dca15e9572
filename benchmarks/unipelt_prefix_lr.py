"""Why a prefix trained through its MLP reparameterisation has its own learning rate (`prefix_mlp`, 1e-3).

UniPELT (default `prefix_projection_size` 512) on MiniLM / Rotten Tomatoes, 125 steps on 2,000 sentences (batch 16,
length 64), scored on 400 validation sentences, three variants: the MLP prefix at the flat prefix's rate 1e-2, at
1e-3 (the default), and a flat prefix at 1e-2. One JSON line per variant.

    OMP_NUM_THREADS=1 python benchmarks/unipelt_prefix_lr.py
"""

from __future__ import annotations

import argparse
import json

VARIANTS = {
    "mlp_prefix_lr_1e-2": ({}, {"prefix_mlp": 1e-2}),
    "mlp_prefix_lr_1e-3": ({}, {"prefix_mlp": 1e-3}),
    "flat_prefix_lr_1e-2": ({"prefix_projection_size": 0}, {"prefix": 1e-2}),
}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="rotten_tomatoes")
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--max-steps", type=int, default=125)
    parser.add_argument("--eval-subset", type=int, default=400)
    args = parser.parse_args(argv)
    import peft_autoconfig  # noqa: F401  (registers the methods)
    from peft_autoconfig import UniPELTConfig
    from peft_autoconfig.search.recipe import resolve_model
    from peft_autoconfig.training.runner import RunConfig, run

    rows = []
    for name, (config, rates) in VARIANTS.items():
        result = run(RunConfig(resolve_model(args.model), args.task, UniPELTConfig(task_type="SEQ_CLS", **config),
                               train_subset=args.train_subset, max_steps=args.max_steps, batch_size=16, max_length=64,
                               eval_subset=args.eval_subset, learning_rates=rates, show_progress=False))
        rows.append({"variant": name, "accuracy": result.metric_value, "eval_loss": result.metrics.get("loss"),
                     "train_loss": result.train_loss})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
