"""Per-step time of an S3PET search step (architecture + weight pass) vs a LoRA r=8 step, MiniLM, batch 16, len 64,
alternating A B A B in one process (CPU shared with other sessions: medians). The ratio (and S3PET's half of the
subset for weights) gives one search's cost in LoRA runs.

    OMP_NUM_THREADS=1 python benchmarks/s3pet_steptime.py      # from the repository root; prints one JSON line last
"""

import json
import statistics
import time
from transformers import Trainer
import peft_autoconfig
from peft_autoconfig.search import Search, load_recipe
from peft_autoconfig.search.s3pet.run import train_search
from peft_autoconfig.search.s3pet import SuperConfiguration
from peft_autoconfig.search.strategies.s3pet import S3PETStrategy
from peft_autoconfig.training.runner import RunConfig, run
from peft_autoconfig.tuners.mixed import MixedPetConfig

TIMES = []
class Timed(Trainer):
    def training_step(self, *a, **k):
        t = time.perf_counter(); out = super().training_step(*a, **k); TIMES.append(time.perf_counter() - t); return out

recipe = load_recipe("recipes/s3pet_rotten_tomatoes.yaml")
search = Search(recipe, "/tmp/s3pet_bench/never", progress=False)
settings = S3PETStrategy.parse_settings(recipe.algorithm.settings)
sc = SuperConfiguration(search.space, settings.modules, settings.sizes)
steps, out = 15, {"lora": [], "s3pet": []}
for rep in range(2):
    TIMES.clear()
    run(RunConfig(search.model, "rotten_tomatoes", MixedPetConfig(lora_rank=8, task_type="SEQ_CLS"), train_subset=steps * 16,
                  max_steps=steps, batch_size=16, max_length=64, eval_subset=32, show_progress=False, trainer_class=Timed))
    out["lora"] += TIMES[2:]
    state, summary = train_search(sc, settings, search.budgets[1], [search.budgets[1]], model=search.model, task="rotten_tomatoes",
                                  training={"batch_size": 16, "max_length": 64}, fidelity={"train_subset": 2 * steps * 16, "max_steps": steps},
                                  eval_split="validation", eval_subset=32, seed=0)
    out["s3pet"] += [h["step_s"] for h in state.history[2:]]
    print(rep, statistics.median(out["lora"]), statistics.median(out["s3pet"]), flush=True)
print(json.dumps({k: {"median_s": statistics.median(v), "n": len(v)} for k, v in out.items()}
                 | {"ratio": statistics.median(out["s3pet"]) / statistics.median(out["lora"]), "positions": len(sc), "super_params": sc.total}))
