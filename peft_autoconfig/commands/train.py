"""`peft-autoconfig train`: train one PEFT config (a local folder or a Hub repo) on a model and task.

Works plain, under `torchrun`, `accelerate launch` and the `deepspeed` launcher (pass `--no_local_rank`, or
use `-m peft_autoconfig.cli`), and with `--deepspeed recipes/deepspeed/zero2.json` on CPU or GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train and evaluate a PEFT config with transformers.Trainer (optionally DeepSpeed)",
        description="Train a PEFT config (a local config folder, e.g. a search front point, or a Hub repo id) on a "
        "model and task, evaluate it, and save the adapter (safetensors) and metrics.json.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id (a classification head is added)")
    parser.add_argument("--task", required=True,
                        help="'rotten_tomatoes', a folder with train/validation/test csv|json|jsonl|parquet files, "
                             "or a Hub dataset name (online)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="PEFT config: a folder with adapter_config.json, a search output (its "
                        "default point), or a Hub repo id")
    source.add_argument("--full-finetuning", action="store_true", help="train all weights (no PEFT), as a reference")
    parser.add_argument("--output-dir", help="where the adapter and metrics.json go (default: nothing kept)")
    parser.add_argument("--deepspeed", help="DeepSpeed JSON config, e.g. recipes/deepspeed/zero2.json")
    fidelity = parser.add_argument_group("budget and fidelity")
    fidelity.add_argument("--seed", type=int, default=0)
    fidelity.add_argument("--train-subset", type=int, help="train on a seeded subset of this many examples")
    fidelity.add_argument("--eval-subset", type=int, help="evaluate on a fixed subset of this many examples")
    fidelity.add_argument("--epochs", type=float, default=1.0, help="epochs (ignored when --max-steps is set)")
    fidelity.add_argument("--max-steps", type=int, default=-1, help="optimiser steps (-1: use --epochs)")
    optimisation = parser.add_argument_group("optimisation (AdamW, one parameter group per block type)")
    optimisation.add_argument("--learning-rates", action="append", metavar="BLOCK=RATE[,BLOCK=RATE...]",
                              help="peak learning rate per block type (repeatable): lora, serial_adapter, "
                                   "parallel_adapter, prefix, gate, head, full; unnamed blocks keep their default "
                                   "(see docs/training.md), e.g. lora=1e-3,prefix=1e-2")
    optimisation.add_argument("--learning-rate", type=float,
                              help="one learning rate for every block (the older single-rate protocol); "
                                   "--learning-rates entries still override it")
    optimisation.add_argument("--warmup-ratio", type=float,
                              help="fraction of the steps warming up linearly (default: see docs/training.md)")
    optimisation.add_argument("--weight-decay", type=float,
                              help="AdamW weight decay on weight matrices (default: see docs/training.md)")
    fidelity.add_argument("--batch-size", type=int, default=16, help="per device / process")
    fidelity.add_argument("--max-length", type=int, default=128)
    fidelity.add_argument("--group-by-length", action="store_true",
                          help="batches of similar lengths: less padding, fewer tokens a step (default: random batches)")
    fidelity.add_argument("--eval-split", default="validation")
    task = parser.add_argument_group("custom tasks (local files or Hub datasets)")
    task.add_argument("--text-columns", nargs="+", help="one or two text columns (default: sentence)")
    task.add_argument("--label-column", help="label column (default: label)")
    task.add_argument("--num-labels", type=int, help="number of classes, 1 for regression (default: inferred)")
    task.add_argument("--metric", nargs="+", help="evaluate metric name(s); the first is reported (default: accuracy)")
    parser.add_argument("--report-to", default="none", help="Trainer report_to: none, tensorboard, wandb, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or library logs")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=main)


def load_peft_config(source: str) -> Any:
    """A PEFT config from a config folder (or its adapter_config.json), a search output (its default point) or a
    Hub repo id, through `peft_autoconfig.front.load_point_config` / `AutoSearchedConfig` (cached by huggingface_hub).
    """
    from ..front import FRONT_FILE, load_point_config
    from ..hub import AutoSearchedConfig, HubError

    path = Path(source).expanduser()
    if path.is_dir() and (path / FRONT_FILE).is_file():
        return AutoSearchedConfig.from_pretrained(path)
    if path.exists():
        return load_point_config(path, where=f"--config {source}")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"--config {source}: not a PEFT config folder (expected adapter_config.json inside).")
    try:
        return AutoSearchedConfig.from_pretrained(source)
    except (HubError, OSError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        raise FileNotFoundError(
            f"--config {source}: not a local folder, and the Hub repo could not be read"
            f"{' (HF_HUB_OFFLINE=1 and it is not in the cache)' if offline else ''}: {str(error).splitlines()[0]}"
        ) from error


def parse_learning_rates(values: Optional[list[str]]) -> Optional[dict[str, float]]:
    """`--learning-rates lora=1e-3,prefix=1e-2` (repeatable) as a validated table; None when the flag is absent."""
    from ..training.optim import LEARNING_RATE_KEYS, validate_learning_rates

    if not values:
        return None
    rates: dict[str, float] = {}
    for item in ",".join(values).split(","):
        block, separator, rate = (part.strip() for part in item.partition("="))
        if not separator:
            raise ValueError(f"`--learning-rates` entry {item!r} is not BLOCK=RATE; blocks: {', '.join(LEARNING_RATE_KEYS)}.")
        try:
            rates[block] = float(rate)
        except ValueError:
            raise ValueError(f"`--learning-rates {block}` must be a number, got {rate!r}.") from None
    return validate_learning_rates(rates, field="--learning-rates")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def format_result(result: Any) -> str:
    lines = [
        f"{result.metric_name}: {result.metric_value:.4f}",
        f"eval metrics: {', '.join(f'{k}={v:.4f}' for k, v in sorted(result.metrics.items()))}",
        f"train loss: {result.train_loss:.4f} ({len(result.loss_history)} steps)",
        f"trainable parameters: {result.trainable_parameters:,} (with head: {result.trainable_parameters_with_head:,})",
        f"wall time: {result.wall_time_s:.1f} s, peak memory: {result.peak_memory_bytes / 2**20:,.0f} MiB",
    ]
    if result.output_dir:
        lines.append(f"saved to: {result.output_dir}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ..training.callbacks import TrainingDiverged
    from ..training.runner import RunConfig, run
    from ..training.tasks import load_task

    learning_rates = parse_learning_rates(args.learning_rates)  # before any data or model is loaded
    optimisation = {key: value for key, value in (("warmup_ratio", args.warmup_ratio), ("weight_decay", args.weight_decay))
                    if value is not None}
    task = load_task(
        args.task, text_columns=args.text_columns, label_column=args.label_column, num_labels=args.num_labels,
        metric=args.metric,
    )
    peft_config = None if args.full_finetuning else load_peft_config(args.config)
    config = RunConfig(
        model_name_or_path=args.model, task=task, peft_config=peft_config, output_dir=args.output_dir, seed=args.seed,
        train_subset=args.train_subset, eval_subset=args.eval_subset, num_epochs=args.epochs,
        max_steps=args.max_steps, learning_rate=args.learning_rate, learning_rates=learning_rates,
        batch_size=args.batch_size, group_by_length=args.group_by_length, max_length=args.max_length,
        eval_split=args.eval_split, report_to=args.report_to, deepspeed=args.deepspeed,
        show_progress=not args.quiet and not args.json, **optimisation,
    )
    try:
        result = run(config)
    except TrainingDiverged as error:
        print(f"peft-autoconfig train: error: {error}", file=sys.stderr)
        return 1
    if is_main_process():
        print(json.dumps(result.to_dict()) if args.json else format_result(result), flush=True)
    return 0
