"""Does a wide block collapse at the default rate that the sweep chose at width 24, and train at a lower one?

    python benchmarks/width_rate_check.py RATE SIZE [BLOCK]      # BLOCK: serial_adapter (default) or parallel_adapter

One run: MiniLM, Rotten Tomatoes, 4,000 sentences x 1 epoch (the sweep's budget), seed 0, the block alone at SIZE
trained at RATE (the head at its default), scored on the whole validation split; prints one JSON line.
RESULTS.md section 2c has what it measured.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from peft_autoconfig import MixedPetConfig
from peft_autoconfig.search.recipe import resolve_model
from peft_autoconfig.training.runner import RunConfig, run


def check(rate: float, size: int, block: str = "serial_adapter", model: str = "minilm",
          task: Any = "rotten_tomatoes", **budget: Any) -> dict[str, Any]:
    """Train `block` alone at `size` and `rate`; its validation metric and training loss."""
    config = MixedPetConfig(task_type="SEQ_CLS", serial_adapter_placement="pfeiffer", **{f"{block}_size": size})
    budget = {"train_subset": 4000, "num_epochs": 1, "batch_size": 16, "max_length": 64, **budget}
    result = run(RunConfig(model_name_or_path=resolve_model(model), task=task, peft_config=config, seed=0,
                           eval_split="validation", learning_rates={block: rate}, save_adapter=False,
                           show_progress=False, **budget))
    return {"block": block, "size": size, "rate": rate, "trainable_parameters": result.trainable_parameters,
            "metric": result.metric_value,
            "train_loss": result.train_loss, "wall_s": result.wall_time_s}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rate", type=float)
    parser.add_argument("size", type=int)
    parser.add_argument("block", nargs="?", default="serial_adapter", choices=["serial_adapter", "parallel_adapter"])
    args = parser.parse_args()
    print(json.dumps(check(args.rate, args.size, args.block)))
