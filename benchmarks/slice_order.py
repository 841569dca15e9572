"""Which units should a slice keep? Uniform-width sub-networks of a trained prune-model super-network, keeping the
*first* w FFN units of every layer (what the search's slices keep) against the w units of highest Taylor or
magnitude importance, scored with the shared weights. The evidence behind `supernet.rewire` (RESULTS.md section 12).

    python benchmarks/slice_order.py --recipe recipes/prune_minilm.yaml --supernet runs/bench_prune/prune/supernet
    python benchmarks/slice_order.py ... --layers 6 5 --widths 64 256 668 1128 1536 --out slice_order.json

Importance is measured on `--importance-batches` batches of the *training* split (not the split the table scores,
`search.eval_split` of the recipe, whole). On a rewired super-network (`supernet/rewiring.json`) the first units
are already the important ones of the warm-up model, so "first" should score like "taylor".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="the prune-model recipe the super-network was trained with")
    parser.add_argument("--supernet", required=True, help="its stage-1 folder (OUT/supernet)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="depths (default: all layers)")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="FFN units per layer (default: 5 widths)")
    parser.add_argument("--importance-batches", type=int, default=32, help="training batches for the Taylor score")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    import torch

    from peft_autoconfig.backbone import Dims, SubNetwork, SuperNetwork
    from peft_autoconfig.backbone.baselines import magnitude_importance, taylor_importance
    from peft_autoconfig.backbone.pipeline import evaluation_batches, load_supernetwork
    from peft_autoconfig.backbone.recipe import load_prune_recipe
    from peft_autoconfig.backbone.search import evaluate_model
    from peft_autoconfig.training.data import collated_batches, load_tokenizer, seeded_subset, tokenized_splits
    from peft_autoconfig.training.metrics import build_compute_metrics
    from peft_autoconfig.training.tasks import load_splits, load_task, resolve_num_labels

    recipe = load_prune_recipe(args.recipe)
    task = load_task(recipe.task)
    tokenizer = load_tokenizer(recipe.model)
    num_labels = resolve_num_labels(task, load_splits(task))
    model = load_supernetwork(recipe, Path(args.supernet), num_labels, tokenizer, task.label_names)
    dims = Dims.from_config(model.config)
    batches = evaluation_batches(recipe, task, tokenizer)
    train = seeded_subset(tokenized_splits(task, tokenizer, recipe.supernet.max_length)["train"],
                          args.importance_batches * recipe.supernet.batch_size, recipe.seed)
    train_batches = collated_batches(train, tokenizer, recipe.supernet.batch_size)
    orders = {"taylor": taylor_importance(model, train_batches), "magnitude": magnitude_importance(model)}
    metric = task.metric_names[0]
    compute = build_compute_metrics(task.metric_names, num_labels)
    switch = SuperNetwork(model)
    heads = tuple(range(dims.num_heads))
    rows = []
    full = dims.intermediate_size
    for depth in args.layers or [dims.num_layers]:
        for width in args.widths or sorted({full // 24, full // 6, full // 2, 3 * full // 4, full}):
            row = {"layers": depth, "units": width}
            choices = {"first": [tuple(range(width))] * depth,
                       **{kind: [scores.top(layer, dims.num_heads, width)[1] for layer in range(depth)]
                          for kind, scores in orders.items()}}
            for kind, units in choices.items():
                with switch.use(SubNetwork(tuple(range(depth)), (heads,) * depth, tuple(units))):
                    row[kind] = evaluate_model(model, batches, compute)[0][metric]
            rows.append(row)
            print(f"layers {depth} units {width:5d}: " + "  ".join(f"{k} {row[k]:.4f}" for k in choices), flush=True)
    switch.remove()
    if args.out:
        Path(args.out).write_text(json.dumps({"recipe": args.recipe, "supernet": args.supernet, "metric": metric,
                                              "split": recipe.search.eval_split, "torch_threads":
                                              torch.get_num_threads(), "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
