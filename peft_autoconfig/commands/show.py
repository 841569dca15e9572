"""`peft-autoconfig show DIR`: print a search's Pareto front (front.json) as a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SIZE_LABELS = (("serial_adapter_size", "serial"), ("parallel_adapter_size", "parallel"), ("prefix_length", "prefix"), ("lora_rank", "lora"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("show", help="Print the Pareto front of a search folder as a table.")
    parser.add_argument("dir", help="A folder written by `peft-autoconfig search` or `prune-model` (holds front.json).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.dir) / "front.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `peft-autoconfig search RECIPE --out {args.dir}` first.")
    document = json.loads(path.read_text())
    if document.get("kind") == "prune-model":
        from .prune_model import format_prune_front

        print(format_prune_front(document))
        return 0
    print(format_front(document, args.dir))
    return 0


def describe_config(config: dict[str, Any]) -> str:
    """A short summary of a saved config: sizes of present modules and the layers."""
    parts = []
    for key, label in SIZE_LABELS:
        value = config.get(key, 0)
        if isinstance(value, dict):
            value = {int(k): v for k, v in value.items() if v}
            if value:
                parts.append(f"{label}={{{', '.join(f'{k}:{v}' for k, v in sorted(value.items()))}}}")
        elif value:
            parts.append(f"{label}={value}")
    if config.get("lora_rank") and config.get("target_modules"):
        parts.append(f"lora_on={','.join(config['target_modules'])}")
    layers = config.get("layers_to_transform")
    parts.append("layers=all" if layers is None else f"layers={','.join(map(str, layers))}")
    return " ".join(parts)


def format_front(document: dict[str, Any], folder: str | Path) -> str:
    """The front as a text table, with the header facts (model, task, hypervolume and its reference point)."""
    metric = document.get("metric", "metric")
    search = document.get("search", {})
    lines = [
        f"model: {document.get('model')}   task: {document.get('task')}   algorithm: {search.get('algorithm')}   "
        f"trials: {search.get('n_trials')} ({search.get('n_failed', 0)} failed)",
        f"hypervolume: {document.get('hypervolume', 0.0):.6g}   reference point: {document.get('reference_point')}   "
        f"objectives: {', '.join(o['name'] + ' (' + o['direction'] + ')' for o in document.get('objectives', []))}",
    ]
    if search.get("cost_full_runs") is not None:
        lines.append(
            f"search time: {search.get('wall_time_s', 0):.0f} s (trials: {search.get('trials_time_s', 0):.0f} s "
            f"= {search['cost_full_runs']:.1f} full-fidelity runs)"
        )
    rows = [("name", metric, "params", "trial", "fidelity", "config")]
    for point in document.get("points", []):
        config_file = Path(folder) / point["config_path"] / "adapter_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        fidelity = ",".join(f"{k}={v}" for k, v in sorted(point.get("fidelity", {}).items())) or "full"
        rows.append(
            (point["name"], f"{point['metric']:.4f}", f"{point['trainable_parameters']:,}", str(point["trial_id"]),
             fidelity, describe_config(config))
        )
    for baseline in document.get("baselines", []) or []:
        rows.append((baseline["name"], f"{baseline['metric']:.4f}", f"{baseline['trainable_parameters']:,}",
                     str(baseline.get("trial_id", "")), "(baseline)", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    table = []
    for j, row in enumerate(rows):
        table.append("  ".join(cell.ljust(w) if i != 1 and i != 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) + "  " + row[-1])
        if j == 0:
            table.append("-" * (sum(widths) + 2 * len(widths) + len("config")))
    if len(rows) == 1:
        table.append("(empty front: no successful trial at the final fidelity; see journal.jsonl)")
    return "\n".join(lines + [""] + table)
