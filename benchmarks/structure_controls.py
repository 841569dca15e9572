"""Do the budgeted one-shot strategies (`s3pet`, `prune`) find better structures than chance at the same budget?

    python benchmarks/structure_controls.py --runs runs/rt_s3pet runs/rt_prune --out runs/rt_controls --n 5 \
        --front runs/rt_seeded --workers 2

The control the S3PET and pruning issues ask for: per budget of the first run's recipe (`budgets:`), N random
structures that fill the same budget, trained and reported under exactly the protocol of the runs' final stage (the
first run's recipe: learning rates, final budget, report split, seeds). Everything is trained through the search
driver: OUT starts as a copy of the first run's folder (journal and one-shot cache, so nothing of that run is trained
again) and the random structures are added to its recipe as named baselines (`random-<budget>-<i>`), so they land
in the same journal as the structure they are compared with and an interrupted run resumes.

A random structure is drawn from the same units the strategies choose from: a block (serial adapter, parallel
adapter, prefix, LoRA, and BitFit when the space has it) in one layer, grown by a random number of units (bottleneck
units, prefix tokens, LoRA ranks) at a random position while the analytic count stays within the budget, then filled
unit by unit until no unit fits, as the strategies fill a budget. Counts come from `count_trainable_parameters`, the
count of every other part of the project.

Reported (OUT/controls.md, OUT/controls.json, OUT/controls.png, printed too): per budget, each strategy's structure
(parameters, test metric), every random structure (parameters, structure, test metric), the random structures' mean
+- sd, how many of them each strategy's structure beats, and with `--front` the nearest point (in log parameters) of
a trial-by-trial search's front.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from peft_autoconfig.front import Front, FrontPoint, describe_config, load_point_config
from peft_autoconfig.search import parse_recipe, read_journal, run_search
from peft_autoconfig.search.recipe import resolve_model

BLOCK_FIELDS: dict[str, str] = {
    "serial_adapter": "serial_adapter_size",
    "parallel_adapter": "parallel_adapter_size",
    "prefix": "prefix_length",
    "lora": "lora_rank",
    "bias": "bias_tuning",
}
"""Space module name -> the per-layer size field of `MixedPetConfig` it sets."""

LORA_TARGETS: tuple[list[str], ...] = (["query", "value"], ["query"], ["value"])
"""LoRA placements a random structure draws from (S3PET scores each projection on its own)."""

STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
"""Units added by one growth move (drawn uniformly), so structures range from many small blocks to few large ones."""


def structure_count(sizes: dict[str, dict[int, int]], fixed: dict[str, Any], model_config: Any) -> int:
    """Analytic trainable parameters of per-layer `sizes` (field -> {layer: size}) with the fixed fields."""
    from peft_autoconfig.tuners.mixed.config import MixedPetConfig
    from peft_autoconfig.tuners.plan import count_trainable_parameters

    fields = {name: {layer: size for layer, size in layers.items() if size} for name, layers in sizes.items()}
    return count_trainable_parameters(MixedPetConfig(**fixed, **{k: v for k, v in fields.items() if v}), model_config)


def random_structure(model_config: Any, num_layers: int, modules: list[str], budget: int, rng: np.random.Generator,
                     fixed: dict[str, Any] | None = None, max_sizes: dict[str, int] | None = None,
                     max_moves: int = 400) -> tuple[dict[str, Any], int]:
    """A random per-layer structure with at most `budget` trainable parameters that no single unit can be added to.

    `max_sizes` (module -> largest size in one layer, e.g. the space's largest prefix) bounds each block as the
    strategies' space does. Returns the `MixedPetConfig` mapping and its count. Raises ValueError when not even one
    unit fits the budget."""
    unknown = sorted(set(modules) - set(BLOCK_FIELDS))
    if unknown:
        raise ValueError(f"modules {unknown} cannot be drawn; allowed: {list(BLOCK_FIELDS)}")
    fixed = dict(fixed or {})
    largest = {BLOCK_FIELDS[m]: size for m, size in (max_sizes or {}).items() if m in BLOCK_FIELDS}
    if "lora" in modules:
        fixed["target_modules"] = list(LORA_TARGETS[rng.integers(len(LORA_TARGETS))])
    sizes: dict[str, dict[int, int]] = {BLOCK_FIELDS[m]: {} for m in modules}
    positions = [(BLOCK_FIELDS[m], layer) for m in modules for layer in range(num_layers)]
    count = 0

    def grown(field: str, layer: int, step: int) -> dict[str, dict[int, int]] | None:
        current = sizes[field].get(layer, 0)
        if field == "bias_tuning" and current:
            return None
        size = 1 if field == "bias_tuning" else min(current + step, largest.get(field, current + step))
        if size == current:
            return None
        new = copy.deepcopy(sizes)
        new[field][layer] = size
        return new

    for _ in range(max_moves):  # random growth: big and small moves anywhere
        field, layer = positions[rng.integers(len(positions))]
        candidate = grown(field, layer, int(rng.choice(STEPS)))
        if candidate is None:
            continue
        candidate_count = structure_count(candidate, fixed, model_config)
        if candidate_count <= budget:
            sizes, count = candidate, candidate_count
    while True:  # fill: one unit at a time in random order until none fits
        for i in rng.permutation(len(positions)):
            candidate = grown(*positions[i], 1)
            if candidate is not None:
                candidate_count = structure_count(candidate, fixed, model_config)
                if candidate_count <= budget:
                    sizes, count = candidate, candidate_count
                    break
        else:
            break
    if count == 0:
        raise ValueError(f"no unit of {modules} fits a budget of {budget} parameters")
    config = {"peft_type": "MIXED_PET", **fixed}
    for field, layers in sizes.items():
        layers = {str(layer): size for layer, size in sorted(layers.items()) if size}
        if layers:
            config[field] = layers
    if "lora_rank" not in config:
        config.pop("target_modules", None)
    return config, count


def describe(config: dict[str, Any]) -> str:
    """The project's one-line description of a config mapping (`show` and the model card print the same)."""
    return describe_config(load_point_config(config))


def test_value(point: FrontPoint) -> float | None:
    """A front point's or baseline's final-stage (report split) mean over seeds; None when it has no report."""
    return point.report.mean if point.report is not None else None


def strategy_points(run_dir: Path, front: Front) -> list[dict[str, Any]]:
    """The budgeted run's front points: strategy, budget (the journal names each one-shot trial `budget=N`),
    parameters, structure and final test value."""
    budgets = {t["trial_id"]: t["name"] for t in read_journal(run_dir / "journal.jsonl") if t["kind"] == "search"}
    points = []
    for p in front.points:
        budget = str(budgets.get(p.trial_id) or "").removeprefix("budget=")
        points.append({"strategy": front.search["algorithm"], "budget": int(budget) if budget.isdigit() else None,
                       "trainable_parameters": p.trainable_parameters, "structure": describe(p.config or {}),
                       "test": test_value(p), "n_seeds": len(p.report.seeds) if p.report else 0})
    return points


def nearest_front_point(front: Front, parameters: int) -> dict[str, Any] | None:
    """The trial-by-trial front's point nearest to `parameters` in log scale (its final test mean)."""
    search = [p for p in front.points if p.metric is not None]
    if not search:
        return None
    p = min(search, key=lambda p: abs(np.log(max(p.trainable_parameters, 1)) - np.log(parameters)))
    return {"name": p.name, "trainable_parameters": p.trainable_parameters, "test": p.metric}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = results["budgets"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    markers = {"s3pet": ("tab:red", "D"), "prune": ("tab:blue", "s")}
    for i, b in enumerate(budgets):
        values = [r["test"] for r in b["random"] if r["test"] is not None]
        ax.scatter(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, color="grey", alpha=0.7,
                   label="random structures" if i == 0 else None)
        for s in b["strategies"]:
            color, marker = markers.get(s["strategy"], ("black", "o"))
            ax.scatter([i + 0.25], [s["test"]], color=color, marker=marker, s=60,
                       label=s["strategy"] if i == 0 else None)
    ax.set_xticks(range(len(budgets)), [f"{b['budget']:,} params\n({b['percent']:.3g} %)" for b in budgets])
    ax.set_ylabel(f"test {results['metric']} (final budget)")
    ax.set_title("Strategy structures vs random structures at the same budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="budgeted search folders (s3pet, prune) of one recipe "
                        "protocol; the first one's recipe trains the controls")
    parser.add_argument("--out", required=True, help="output folder (a copy of the first run, then its controls)")
    parser.add_argument("--n", type=int, default=5, help="random structures per budget")
    parser.add_argument("--seed", type=int, default=0, help="seed of the structure draws")
    parser.add_argument("--front", help="a trial-by-trial search folder: its nearest front point per budget is shown")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")

    runs = [Path(r) for r in args.runs]
    out = Path(args.out)
    if not (out / "journal.jsonl").exists():
        shutil.copytree(runs[0], out, dirs_exist_ok=True)
    fronts = [Front.load(run) for run in runs]
    raw = fronts[0].search["recipe"]  # the run's `recipe.raw`, as its journal header holds it
    recipe = parse_recipe(raw)
    from transformers import AutoConfig

    from peft_autoconfig.search.baselines import backbone_parameter_count

    model_config = AutoConfig.from_pretrained(resolve_model(recipe.model))
    backbone = backbone_parameter_count(model_config)
    strategies = [p for run, front in zip(runs, fronts) for p in strategy_points(run, front)]
    budgets = sorted({p["budget"] for p in strategies if p["budget"]})
    modules = sorted({m for front in fronts for m in front.search["space"]["modules"]}, key=list(BLOCK_FIELDS).index)
    fixed = dict(raw.get("space", {}).get("fixed") or {})
    max_sizes: dict[str, int] = {}
    for front in fronts:
        for module, sizes in front.search["space"]["size_options"].items():
            max_sizes[module] = max(max_sizes.get(module, 0), max(sizes))
    rng = np.random.default_rng(args.seed)
    controls = []
    for budget in budgets:
        for i in range(args.n):
            config, count = random_structure(model_config, model_config.num_hidden_layers, modules, budget, rng, fixed,
                                             max_sizes)
            controls.append({"name": f"random-{budget}-{i}", "budget": budget, "config": config,
                             "trainable_parameters": count})
    with_controls = copy.deepcopy(raw)
    with_controls["baselines"] = list(raw.get("baselines") or []) + [
        {"name": c["name"], "config": c["config"]} for c in controls]
    run_search(parse_recipe(with_controls), out, workers=args.workers, progress=True)

    trained = Front.load(out)
    reference = Front.load(args.front) if args.front else None
    results: dict[str, Any] = {"metric": trained.metric, "backbone_parameters": backbone, "n": args.n, "seed": args.seed,
                               "modules": modules, "max_sizes": max_sizes, "budgets": []}
    for budget in budgets:
        random_rows = []
        for c in controls:
            if c["budget"] == budget:
                random_rows.append({"name": c["name"], "trainable_parameters": c["trainable_parameters"],
                                    "structure": describe(c["config"]), "test": test_value(trained.point(c["name"]))})
        values = [r["test"] for r in random_rows if r["test"] is not None]
        rows = []
        for s in (p for p in strategies if p["budget"] == budget):
            rows.append({**s, "beats": sum(s["test"] > v for v in values) if s["test"] is not None else None,
                         "of": len(values)})
        results["budgets"].append({
            "budget": budget, "percent": 100 * budget / backbone, "strategies": rows, "random": random_rows,
            "random_mean": float(np.mean(values)) if values else None,
            "random_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "nearest_front_point": nearest_front_point(reference, budget) if reference else None,
        })
    (out / "controls.json").write_text(json.dumps(results, indent=2) + "\n")
    text = format_report(results)
    (out / "controls.md").write_text(text)
    plot(results, out / "controls.png")
    print(text)
    return results


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_report(results: dict[str, Any]) -> str:
    lines = [f"| budget | who | trainable params | structure | test {results['metric']} |", "|---|---|---:|---|---:|"]
    summary = ["", "| budget | random mean +- sd (n) | strategy: beats k of n random | nearest front point |",
               "|---|---:|---|---|"]
    for b in results["budgets"]:
        label = f"{b['budget']:,} ({b['percent']:.3g} %)"
        for s in b["strategies"]:
            lines.append(f"| {label} | **{s['strategy']}** | {s['trainable_parameters']:,} | {s['structure']} | "
                         f"**{_num(s['test'])}** |")
        for r in b["random"]:
            lines.append(f"| {label} | {r['name']} | {r['trainable_parameters']:,} | {r['structure']} | "
                         f"{_num(r['test'])} |")
        near = b["nearest_front_point"]
        near_text = f"{near['name']} ({near['trainable_parameters']:,}): {_num(near['test'])}" if near else "-"
        beats = "; ".join(f"{s['strategy']} {_num(s['test'])}: {s['beats']} of {s['of']}" for s in b["strategies"])
        n = len([r for r in b["random"] if r["test"] is not None])
        summary.append(f"| {label} | {_num(b['random_mean'])} +- {_num(b['random_sd'])} ({n}) | {beats} | {near_text} |")
    return "\n".join(lines + summary) + "\n"


if __name__ == "__main__":
    main()
