"""`peft-autoconfig show DIR`: print a search's Pareto front (front.json) as a table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..front import FRONT_FILE, FrontPoint


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("show", help="Print the Pareto front of a search folder as a table.")
    parser.add_argument("dir", help="A folder written by `peft-autoconfig search` or `prune-model` (holds front.json).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..front import Front, read_json

    path = Path(args.dir) / FRONT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `peft-autoconfig search RECIPE --out {args.dir}` first.")
    document = read_json(path, str(path))
    if document.get("kind") == "prune-model":  # a backbone-pruning front (`prune-model`), not a PEFT-config front
        from .prune_model import format_prune_front

        print(format_prune_front(document))
        return 0
    print(format_front(Front.from_dict(document, str(path)), args.dir))
    return 0


def _value(value: float | None, standard_error: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" +- {standard_error:.4f}" if standard_error is not None else "")


def format_selection(point: FrontPoint) -> str:
    """'0.8125 +- 0.0123 (validation, n=400)': the value the search selected on, with its standard error."""
    selection = point.selection
    if selection is None:
        return "-"
    where = ", ".join([selection.split] + ([f"n={selection.n}"] if selection.n is not None else []))
    return f"{_value(selection.value, selection.standard_error)} ({where})"


def format_report(point: FrontPoint) -> str:
    """'0.8030 sd 0.0040 se 0.0110 (test, n=1280, seeds 0.799/0.807)': the final stage's held-out result."""
    report = point.report
    if report is None:
        return "-"
    parts = [f"{report.mean:.4f}"]
    if report.sd is not None:
        parts.append(f"sd {report.sd:.4f}")
    if report.standard_error is not None:
        parts.append(f"se {report.standard_error:.4f}")
    where = [report.split] + ([f"n={report.n}"] if report.n is not None else [])
    if report.seeds:
        where.append("seeds " + "/".join(f"{s:.4f}" for s in report.seeds))
    return " ".join(parts) + f" ({', '.join(where)})"


def format_front(front: Any, folder: str | Path) -> str:
    """The front (a `Front`, or the document `write_front` returned) as a text table, with the header facts."""
    from ..front import Front, FrontError, describe_config, load_point_config
    from ..front.stats import describe_fidelity_agreement

    if not isinstance(front, Front):
        front = Front.from_dict(front, str(Path(folder) / FRONT_FILE))
    search = front.search
    hypervolume = front.hypervolume if front.hypervolume is not None else 0.0
    lines = [
        f"model: {front.model}   task: {front.task}   algorithm: {search.get('algorithm')}   "
        f"trials: {search.get('n_trials')} ({search.get('n_failed', 0)} failed)",
        f"hypervolume: {hypervolume:.6g}   reference point: {front.reference_point}   "
        f"objectives: {', '.join(f'{o.name} ({o.direction})' for o in front.objectives)}",
    ]
    # a front not re-trained before the final stage (`retrain: false`) has no full-fidelity run, only the LoRA unit
    costs = [f" = {search[key]:.1f} {unit}" for key, unit in (("cost_full_runs", "full-fidelity runs"),
                                                               ("cost_lora_r8_runs", "final-budget LoRA r=8 runs"))
             if search.get(key) is not None]
    if costs:
        lines.append(f"search time: {search.get('wall_time_s', 0):.0f} s (trials: "
                     f"{search.get('trials_time_s', 0):.0f} s{''.join(costs)})")
    agreement = describe_fidelity_agreement(search.get("fidelity_agreement") or [])
    if agreement:  # how well each cheaper level ranked the points promoted from it (docs/search.md, item 4)
        lines.append(f"fidelity agreement: {agreement} (promoted points only: docs/search.md)")
    has_report = any(p.report is not None for p in front.points + front.baselines)
    header = ("name", f"{front.metric} (selection)") + ((f"{front.metric} (report)",) if has_report else ()) + (
        "params", "trial", "fidelity", "config")
    rows = [header]
    for point in front.points + front.baselines:
        try:  # a baseline without a config (full fine-tuning, or a format-1 file) has nothing to describe
            no_config = point.kind == "baseline" and point.config is None
            description = "-" if no_config else describe_config(load_point_config(point, root=folder))
        except (FrontError, FileNotFoundError):
            description = "(config unreadable)"
        fidelity = ",".join(f"{k}={v}" for k, v in sorted(point.fidelity.items()) if v is not None) or "full"
        row = (point.name, format_selection(point)) + ((format_report(point),) if has_report else ()) + (
            f"{point.trainable_parameters:,}", "" if point.trial_id is None else str(point.trial_id),
            "(baseline)" if point.kind == "baseline" else fidelity, description)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    table = []
    for j, row in enumerate(rows):
        table.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        if j == 0:
            table.append("-" * (sum(widths) + 2 * len(widths) + len("config")))
    if not front.points:
        table.append("(empty front: no successful trial at the final fidelity; see journal.jsonl)")
    return "\n".join(lines + [""] + table)
