"""`peft-autoconfig prune-model RECIPE --out DIR`: structural pruning of the backbone (see docs/backbone.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune-model",
        help="Prune the backbone: super-network training, then a Pareto search over sub-networks, exported.",
        description=(
            "Fine-tune the model as a weight-sharing super-network (sandwich rule, in-place distillation), search "
            "its sub-networks (layers, heads, FFN units) for task metric vs. parameters vs. measured latency, and "
            "export the Pareto set as plain smaller models: DIR/front json, DIR/front/<point>/, DIR/journal.jsonl, "
            "DIR/supernet/. Re-running the same command resumes. `--show DIR` prints a finished front."
        ),
    )
    parser.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/prune_minilm.yaml).")
    parser.add_argument("--out", help="Output folder (created; reused to resume).")
    parser.add_argument("--show", metavar="DIR", help="Print the front of a prune-model folder and exit.")
    parser.add_argument("--no-progress", action="store_true", help="Do not show progress bars.")
    parser.add_argument("--push", metavar="ORG/NAME", default=None,
                        help="After the run, push one pruned model with its card to this Hub repo (see `push`).")
    parser.add_argument("--point", default=None, help="With --push: the front point (default the best metric).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.show is not None:
        if args.recipe is not None or args.out is not None:
            raise ValueError("`--show DIR` takes no RECIPE or `--out`.")
        from ..front.files import FRONT_FILE

        path = Path(args.show) / FRONT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; run `peft-autoconfig prune-model RECIPE --out {args.show}`.")
        print(format_prune_front(json.loads(path.read_text())))
        return 0
    if args.point is not None and args.push is None:
        raise ValueError("`--point` needs `--push ORG/NAME`.")
    if args.push is not None and (args.push.count("/") != 1 or not all(args.push.split("/"))):
        raise ValueError(f"`--push` must look like 'org/name', got {args.push!r}.")  # before any training
    if args.recipe is None or args.out is None:
        raise ValueError("`prune-model` needs RECIPE and `--out DIR` (or `--show DIR`).")
    from ..backbone.pipeline import prune_model
    from ..backbone.recipe import load_prune_recipe

    result = prune_model(load_prune_recipe(args.recipe), args.out, progress=not args.no_progress)
    if not result.document:  # not rank 0 of a distributed stage 1
        return 0
    print(format_prune_front(result.document))
    print(f"\n{result.n_trials} sub-networks asked ({result.n_scored} scored now); outputs in {args.out}")
    if not result.document["points"]:
        return 1
    if args.push is not None:
        from ..hub import HubError
        from ..hub.pruned import push_pruned_model

        try:
            pushed = push_pruned_model(args.out, args.push, point=args.point)
        except HubError as error:
            print(f"peft-autoconfig prune-model: error: the run finished, the push failed: {error}", file=sys.stderr)
            return 1
        print(f"pushed {len(pushed.files)} files to {pushed.repo_id} in one commit: {pushed.commit_url}")
    return 0


def format_prune_front(document: dict[str, Any]) -> str:
    """The front as a text table beside the unpruned model: metric, parameters, latency, sub-network."""
    metric = document.get("metric", "metric")
    latency = document.get("latency", {})
    search = document.get("search", {})
    lines = [
        f"model: {document.get('model')}   task: {document.get('task')}   granularity: {document.get('granularity')}"
        f"   algorithm: {search.get('algorithm')}   trials: {search.get('n_trials')} ({search.get('n_failed', 0)} failed)",
        f"latency: batch {latency.get('batch_size')} x {latency.get('sequence_length')} tokens, median of "
        f"{latency.get('repeats')}, {latency.get('torch_threads')} threads on {latency.get('device')}   "
        f"hypervolume: {document.get('hypervolume', 0.0):.6g}",
        "",
    ]
    rows = [("name", metric, "params", "latency ms", "sub-network")]
    unpruned = document.get("unpruned")
    if unpruned:
        rows.append(("unpruned", f"{unpruned['metric']:.4f}", f"{unpruned['parameters']:,}",
                     f"{1000 * unpruned['objectives']['latency_s']:.2f}", "(the super-network's full model)"))
    for point in document.get("points", []):
        rows.append((point["name"], f"{point['metric']:.4f}", f"{point['parameters']:,}",
                     f"{1000 * point['objectives']['latency_s']:.2f}", point["description"]
                     + (f"  (re-trained: {point['retrained']['metric']:.4f})" if "retrained" in point else "")))
    for baseline in document.get("baselines", []):
        larger = baseline["parameters"] > baseline["target_parameters"]
        size = "  (larger than its target: the rule cannot go smaller)" if larger else ""
        rows.append((baseline["name"], f"{baseline['metric']:.4f}", f"{baseline['parameters']:,}",
                     f"{1000 * baseline['objectives']['latency_s']:.2f}", baseline["description"] + size))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for j, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     + "  " + row[4])
        if j == 0:
            lines.append("-" * (sum(widths) + 8 + len(row[4])))
    return "\n".join(lines)
