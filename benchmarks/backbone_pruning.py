"""Structural pruning of the backbone (issue 18): the prune-model front against the unpruned model and two
fixed-rule baselines at equal size, on the report split, on this machine's CPU.

    python benchmarks/backbone_pruning.py --recipe recipes/prune_minilm.yaml --out runs/bench_prune
    python benchmarks/backbone_pruning.py --recipe recipes/prune_minilm.yaml --out runs/bench_prune --kendall 10

Steps (each resumable: re-running reuses OUT/prune, OUT/full_finetune and OUT/standalone/*):
1. `prune-model` on the recipe (one super-network training, the search, the export, the baselines at each front
   point's size: `drop_top_layers` and `importance`) in OUT/prune;
2. unless `--no-full-finetune`: one ordinary full fine-tuning of the unpruned model with the super-network's
   training settings (the reference accuracy and the unit of cost);
3. every front point is reloaded from its exported folder with plain `AutoModelForSequenceClassification`, its
   parameters are counted and its latency measured again (batch x sequence length of the recipe's `latency:`,
   the smallest of `--rounds` medians of `--repeats` forward passes, rounds interleaved over all models), and it
   is scored on the report split (`--report-split`, default test, which the
   search never saw); the baselines (exported from the super-network) and the unpruned super-network likewise;
4. with `--kendall N`: N scored sub-networks (spread over the journal by size) are exported from the *pre-trained*
   model (rewired like the super-network, when stage 1 rewired it) and fine-tuned stand-alone with the super-network's settings, scored on the search's split, and Kendall's
   tau between their stand-alone scores and their super-network scores is reported;
5. the cost: stage 1 plus every scoring of stage 2 (wall time), in units of the full fine-tuning's wall time.

Prints the table and writes OUT/results.json, OUT/results.md and OUT/results.png (the report-split metric against
parameters and against latency: front, baselines, unpruned models).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peft_autoconfig.backbone import SubNetwork, export_model
from peft_autoconfig.backbone.pipeline import evaluation_batches, load_supernetwork, prune_model
from peft_autoconfig.backbone.recipe import PruneRecipe, load_prune_recipe
from peft_autoconfig.backbone.rewiring import apply_rewiring
from peft_autoconfig.backbone.search import evaluate_model, measure_latency
from peft_autoconfig.search.journal import read_journal


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True, help="prune-model recipe (e.g. recipes/prune_minilm.yaml)")
    parser.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    parser.add_argument("--report-split", default="test", help="split the table's metric is measured on")
    parser.add_argument("--repeats", type=int, default=20, help="forward passes per latency measurement (median)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="latency rounds over all models, interleaved; the smallest median counts (load noise)")
    parser.add_argument("--kendall", type=int, default=0, metavar="N",
                        help="fine-tune N sub-networks stand-alone and report Kendall tau (0: skip; the issue "
                        "asks >= 10)")
    parser.add_argument("--standalone-max-steps", type=int, default=None,
                        help="budget of each --kendall stand-alone run (default: the super-network's; the full "
                        "fine-tuning always has the super-network's, as it is the unit of cost)")
    parser.add_argument("--no-full-finetune", action="store_true", help="skip the unpruned full fine-tuning run")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    return parser.parse_args(argv)


def fine_tune(recipe: PruneRecipe, model_dir: str, out: Path, max_steps: int | None, progress: bool) -> dict[str, Any]:
    """A full fine-tuning run with the super-network's settings (cached in `out`): its metrics.json."""
    from peft_autoconfig.training.runner import RunConfig, run

    metrics = out / "metrics.json"
    if not metrics.is_file():
        spec = recipe.supernet
        run(RunConfig(
            model_name_or_path=model_dir, task=recipe.task, output_dir=str(out), seed=recipe.seed,
            train_subset=spec.train_subset, num_epochs=spec.num_epochs,
            max_steps=max_steps or spec.max_steps or -1, learning_rate=spec.learning_rate,
            batch_size=spec.batch_size, max_length=spec.max_length, eval_split=recipe.search.eval_split,
            eval_subset=recipe.search.eval_subset, show_progress=progress,
        ))
    return json.loads(metrics.read_text())


def measure(name: str, kind: str, model: torch.nn.Module, batches: list, compute_metrics: Any, metric_name: str,
            **extra: Any) -> dict[str, Any]:
    """A table row: size and metric of `model` (its latency is measured later, in interleaved rounds)."""
    scores, n = evaluate_model(model.eval(), batches, compute_metrics)
    return {"name": name, "kind": kind, "parameters": model.num_parameters(), "metric": scores[metric_name],
            "n_report": n, **extra}


def measure_latencies(rows: list[dict[str, Any]], loaders: list[Any], latency: dict[str, int], rounds: int) -> None:
    """`latency_s` of every row: `rounds` passes over all models in turn (so a burst of machine load hits one round
    of every model, not every round of one), the smallest median of `latency["repeats"]` forward passes."""
    for row in rows:
        row["latency_rounds_s"] = []
    for _ in range(rounds):
        for row, load in zip(rows, loaders):
            row["latency_rounds_s"].append(measure_latency(load().eval(), **latency))
    for row in rows:
        row["latency_s"] = min(row["latency_rounds_s"])


def spread(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` records evenly spaced by size (all of them when there are fewer)."""
    records = sorted(records, key=lambda r: (r["trainable_parameters"], r["trial_id"]))
    if len(records) <= n:
        return records
    return [records[int(i)] for i in np.linspace(0, len(records) - 1, n).round()]


def kendall(recipe: PruneRecipe, out: Path, journal: list[dict[str, Any]], n: int, max_steps: int | None,
            progress: bool) -> dict[str, Any]:
    """Super-network score vs. stand-alone fine-tuning of `n` sub-networks exported from the pre-trained model."""
    from scipy.stats import kendalltau

    from peft_autoconfig.training.data import load_tokenizer
    from peft_autoconfig.training.runner import load_model
    from peft_autoconfig.training.tasks import load_splits, load_task, resolve_num_labels

    chosen = spread([r for r in journal if r["status"] == "ok" and r["kind"] == "search"], n)
    task = load_task(recipe.task)
    tokenizer = load_tokenizer(recipe.model)
    pretrained = load_model(recipe.model, resolve_num_labels(task, load_splits(task)), tokenizer, task.label_names)
    apply_rewiring(pretrained, out / "prune" / "supernet")  # the units the sub-networks index, if stage 1 sorted them
    pairs = []
    for record in chosen:
        sub = SubNetwork.from_dict(record["config"])
        folder = out / "standalone" / hashlib.sha256(record["key"].encode()).hexdigest()[:12]
        if not (folder / "metrics.json").is_file():
            export_model(pretrained, sub).save_pretrained(folder / "init")
            tokenizer.save_pretrained(folder / "init")
        metrics = fine_tune(recipe, str(folder / "init"), folder, max_steps, progress)
        pairs.append({"subnetwork": sub.describe(), "parameters": record["trainable_parameters"],
                      "supernet_score": record["metric"], "standalone_score": metrics["metric_value"],
                      "standalone_wall_time_s": metrics.get("wall_time_s")})
    if len(pairs) < 2:
        return {"n": len(pairs), "tau": None, "p_value": None, "pairs": pairs}
    tau, p = kendalltau([x["supernet_score"] for x in pairs], [x["standalone_score"] for x in pairs])
    return {"n": len(pairs), "tau": None if np.isnan(tau) else float(tau), "p_value": None if np.isnan(p) else float(p),
            "split": recipe.search.eval_split, "pairs": pairs}


def format_table(rows: list[dict[str, Any]], metric_name: str, split: str) -> str:
    header = ("name", "kind", "params", "latency ms", f"{metric_name} ({split})", "vs front's", "network")
    lines = [header]
    for r in rows:
        check = ""
        if r["kind"] == "front":
            check = (f"params {'=' if r['parameters'] == r['front_parameters'] else '!='}, "
                     f"latency x{r['latency_s'] / r['front_latency_s']:.2f}")
        elif r.get("target_parameters") is not None:
            larger = " (larger)" if r["parameters"] > r["target_parameters"] else ""
            check = f"target {r['target_parameters']:,}{larger}"
        lines.append((r["name"], r["kind"], f"{r['parameters']:,}", f"{1000 * r['latency_s']:.2f}",
                      f"{r['metric']:.4f}", check, r.get("description", "")))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


PLOT_STYLES = {"front": ("o", "C0"), "importance": ("s", "C1"), "drop_top_layers": ("v", "C2"),
               "super-network": ("*", "C3"), "fine-tuned alone": ("P", "C4"), "front re-trained": ("D", "C5")}


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Report-split metric against exported parameters and against measured latency, one marker per row kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for kind, (marker, color) in PLOT_STYLES.items():
        rows = [r for r in results["rows"] if r["kind"] == kind]
        if not rows:
            continue
        for axis, x in zip(axes, ([r["parameters"] / 1e6 for r in rows], [1000 * r["latency_s"] for r in rows])):
            axis.scatter(x, [r["metric"] for r in rows], marker=marker, color=color, label=kind, s=40, alpha=0.8)
    front = sorted((r for r in results["rows"] if r["kind"] == "front"), key=lambda r: r["parameters"])
    axes[0].plot([r["parameters"] / 1e6 for r in front], [r["metric"] for r in front], color="C0", alpha=0.5)
    axes[0].set_xlabel("parameters of the exported model (M)")
    axes[1].set_xlabel(f"latency (ms, batch {results['latency']['batch_size']} x {results['latency']['sequence_length']},"
                       f" {results['torch_threads']} thread(s))")
    axes[0].set_ylabel(f"{results['metric']} ({results['report_split']})")
    axes[1].legend(loc="lower right", fontsize=8)
    figure.suptitle(f"prune-model on {results['task']}: the front (selected on validation) and fixed rules")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from peft_autoconfig.training.data import load_tokenizer
    from peft_autoconfig.training.metrics import build_compute_metrics
    from peft_autoconfig.training.tasks import load_splits, load_task, resolve_num_labels
    from transformers import AutoModelForSequenceClassification

    recipe = load_prune_recipe(args.recipe)
    out = Path(args.out)
    prune_dir = out / "prune"
    start = time.perf_counter()
    prune_model(recipe, prune_dir, progress=args.progress)
    document = json.loads((prune_dir / "front.json").read_text())
    journal = read_journal(prune_dir / "journal.jsonl")

    task = load_task(recipe.task)
    tokenizer = load_tokenizer(recipe.model)
    num_labels = resolve_num_labels(task, load_splits(task))
    metric_name = task.metric_names[0]
    compute_metrics = build_compute_metrics(task.metric_names, num_labels)
    batches = evaluation_batches(recipe, task, tokenizer, split=args.report_split)
    latency = {"batch_size": recipe.latency.batch_size, "sequence_length": recipe.latency.sequence_length,
               "repeats": args.repeats, "device": recipe.latency.device}
    supernet = load_supernetwork(recipe, prune_dir / "supernet", num_labels, tokenizer, task.label_names)

    rows, loaders = [], []

    def row(name: str, kind: str, load: Any, **extra: Any) -> None:
        rows.append(measure(name, kind, load(), batches, compute_metrics, metric_name, **extra))
        loaders.append(load)

    def plain(path: Path) -> Any:  # plain transformers, as a user loads it
        return lambda: AutoModelForSequenceClassification.from_pretrained(path)

    row("unpruned", "super-network", lambda: supernet, description="the super-network's full model")
    full = None
    if not args.no_full_finetune:
        full = fine_tune(recipe, recipe.model, out / "full_finetune", None, args.progress)
        row("unpruned", "fine-tuned alone", plain(out / "full_finetune"),
            description="full fine-tuning, the super-network's settings")
    for point in document["points"]:
        row(point["name"], "front", plain(prune_dir / point["path"]), description=point["description"],
            front_parameters=point["parameters"], front_latency_s=point["objectives"]["latency_s"],
            selection_metric=point["metric"])
        if "retrained" in point:
            row(point["name"], "front re-trained", plain(prune_dir / point["retrained"]["path"]),
                description=point["description"])
    for baseline in document.get("baselines", []):
        sub = SubNetwork.from_dict(baseline["subnetwork"])
        row(baseline["name"], baseline["rule"], lambda sub=sub: export_model(supernet, sub),
            description=baseline["description"], target_parameters=baseline["target_parameters"],
            selection_metric=baseline["metric"])
    measure_latencies(rows, loaders, latency, args.rounds)

    results: dict[str, Any] = {"recipe": args.recipe, "model": recipe.model, "task": recipe.task,
                               "report_split": args.report_split, "metric": metric_name, "latency": latency,
                               "torch_threads": torch.get_num_threads(), "rows": rows}
    stage1 = json.loads((prune_dir / "supernet" / "DONE.json").read_text())["wall_time_s"]
    stage2 = sum(r.get("wall_time_s") or 0.0 for r in journal  # the search and the unpruned score, not the baselines
                 if r["kind"] != "baseline" or r.get("name") == "unpruned")
    results["cost"] = {"stage1_wall_time_s": stage1, "stage2_wall_time_s": stage2,
                       "full_finetune_wall_time_s": full["wall_time_s"] if full else None,
                       "full_runs": (stage1 + stage2) / full["wall_time_s"] if full else None}
    if args.kendall:
        results["kendall"] = kendall(recipe, out, journal, args.kendall, args.standalone_max_steps, args.progress)
    results["wall_time_s"] = time.perf_counter() - start

    lines = [f"# Backbone pruning: {recipe.model} on {recipe.task}", "",
             f"{metric_name} on `{args.report_split}`; latency: the smallest of {args.rounds} interleaved medians of "
             f"{args.repeats} passes, batch {latency['batch_size']} x {latency['sequence_length']} tokens, "
             f"{torch.get_num_threads()} threads, CPU.",
             "", format_table(rows, metric_name, args.report_split), ""]
    cost = results["cost"]
    lines.append(f"cost: stage 1 {stage1:.0f} s + stage 2 {stage2:.0f} s"
                 + (f" = {cost['full_runs']:.2f} full fine-tuning runs ({cost['full_finetune_wall_time_s']:.0f} s each)"
                    if cost["full_runs"] is not None else " (no full fine-tuning run to compare with)"))
    if "kendall" in results:
        k = results["kendall"]
        tau = "n/a" if k["tau"] is None else f"{k['tau']:.3f} (p={k['p_value']:.3g})"
        lines.append(f"Kendall tau, super-network score vs. stand-alone fine-tuning on {k.get('split')}, "
                     f"{k['n']} sub-networks: {tau}")
        lines += ["", "| sub-network | params | super-network score | stand-alone score |", "|---|---:|---:|---:|"]
        lines += [f"| {x['subnetwork']} | {x['parameters']:,} | {x['supernet_score']:.4f} | "
                  f"{x['standalone_score']:.4f} |" for x in k["pairs"]]
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_results(results, out / "results.png")
    return results


if __name__ == "__main__":
    main()
