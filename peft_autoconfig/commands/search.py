"""`peft-autoconfig search RECIPE.yaml --out DIR`: run or resume a multi-objective configuration search."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="Search PEFT configurations (Pareto front of task metric vs. trainable parameters).",
        description=(
            "Run the search described by a YAML recipe and write DIR/front.json, DIR/front/<point>/ (PEFT config "
            "folders), DIR/journal.jsonl and DIR/pareto.png. Re-running the same command resumes from the journal."
        ),
    )
    parser.add_argument("recipe", help="YAML recipe (see recipes/demo.yaml and docs/search.md).")
    parser.add_argument("--out", required=True, help="Output folder (created; reused to resume).")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, default=1, help="Local Dask workers (processes); 1 = no Dask (default).")
    group.add_argument("--scheduler", default=None, help="Address of a running Dask scheduler, e.g. tcp://host:8786.")
    parser.add_argument("--no-progress", action="store_true", help="Do not show the progress bar.")
    parser.add_argument(
        "--retry-failed", action="store_true",
        help="When resuming, run the journal's failed trials again (by default a failed trial stays failed).",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..search import load_recipe, run_search
    from .show import format_front

    if args.workers < 1:
        raise ValueError(f"`--workers` must be >= 1, got {args.workers}.")
    recipe = load_recipe(args.recipe)
    result = run_search(
        recipe, args.out, workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress,
        retry_failed=args.retry_failed,
    )
    print(format_front(result.document, args.out))
    print(
        f"\n{result.n_trials} trials in the journal ({result.n_evaluated} evaluated now, "
        f"{result.n_trials - result.n_evaluated} resumed); outputs in {args.out}"
    )
    return 0 if result.document["points"] else 1
