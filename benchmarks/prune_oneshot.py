"""The `prune` strategy's one-shot stage alone on MiniLM / Rotten Tomatoes: which structure survives at each budget,
the pruned model's own validation score, and the stage's wall time. No re-training of the results (the search's
driver does that); see docs/search.md for the full protocol.

    OMP_NUM_THREADS=1 python -m benchmarks.prune_oneshot --out /tmp/prune --steps 40 --retrain 8 \
        --budgets 0.01% 0.1% 1% [--unstructured]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    import peft_autoconfig  # noqa: F401  (registers the methods)
    from peft_autoconfig.search.baselines import backbone_parameter_count
    from peft_autoconfig.search.oneshot import OneShotContext, resolve_budgets
    from peft_autoconfig.search.recipe import resolve_model
    from peft_autoconfig.search.space import SearchSpace, SpaceSpec
    from peft_autoconfig.search.strategies.prune import PruneSettings, PruneStrategy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="rotten_tomatoes")
    parser.add_argument("--budgets", nargs="+", default=["0.01%", "0.1%", "1%"])
    parser.add_argument("--modules", nargs="+", default=["lora", "parallel_adapter", "prefix", "bias"])
    parser.add_argument("--max-size", type=int, default=64, help="largest adapter size / prefix length in the space")
    parser.add_argument("--max-rank", type=int, default=16)
    parser.add_argument("--train-subset", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps of the maximal configuration")
    parser.add_argument("--retrain", type=int, default=8, help="re-training steps after each pruning step")
    parser.add_argument("--keep-fraction", type=float, default=0.5)
    parser.add_argument("--eval-subset", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--unstructured", action="store_true")
    args = parser.parse_args(argv)

    model = resolve_model(args.model)
    sizes = {m: [0, args.max_rank] if m == "lora" else [0, args.max_size] for m in args.modules if m != "bias"}
    space = SearchSpace.from_pretrained(model, SpaceSpec(modules=tuple(args.modules), sizes=sizes, layer_mode="sizes"))
    budgets = resolve_budgets(args.budgets, backbone_parameter_count(space.model_config), space.max_cost())
    strategy = PruneStrategy(pop_size=1, repair=space.repair, settings=PruneSettings(
        keep_fraction=args.keep_fraction, retrain_steps=args.retrain, unstructured=args.unstructured))
    context = OneShotContext(
        model=model, task=args.task, space=space,
        training={"batch_size": args.batch_size, "max_length": args.max_length},
        fidelity={"train_subset": args.train_subset, "max_steps": args.steps},
        selection_split="validation", eval_subset=args.eval_subset, seed=0, budgets=budgets,
        work_dir=args.out, progress=False,
    )
    start = time.perf_counter()
    results = strategy.search(context)
    wall = time.perf_counter() - start
    report = {"wall_time_s": wall, "max_parameters": space.max_cost(), "budgets": budgets,
              "results": [r.to_dict() for r in results]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prune_oneshot.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"one-shot stage: {wall:.0f} s; maximal configuration {space.max_cost():,} parameters")
    for r in results:
        sizes = {f: s for f, s in r.details.get("sizes", {}).items() if s}
        print(f"budget {r.budget:>9,}  kept {r.trainable_parameters:>9,}  score {r.score}  {sizes or r.details.get('kept_per_block')}")
    return report


if __name__ == "__main__":
    main()
