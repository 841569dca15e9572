"""Search quality on a real task: NSGA-II vs random search (same budget, several seeds) vs hand-designed configs.

    python benchmarks/search_quality.py --out runs/bench_search            # MiniLM on Rotten Tomatoes
    python benchmarks/search_quality.py --smoke --out /tmp/bench           # tiny model + synthetic task (tests)

For each algorithm and seed a full `peft-autoconfig search` runs (low-fidelity trials, then successive-halving
promotion so the front is measured at the final fidelity, on validation). Every front point and every baseline
(LoRA r=8 q/v, serial adapter reduction 16, parallel adapter reduction 16, prefix length 10, UniPELT defaults)
is then trained at the final fidelity with the same seed and scored on the held-out *test* split.

Reported, measured in this one run:
- hypervolume of each validation front, all against one reference point (accuracy 0.5, 1.1 x the largest
  configuration of the space; parameters normalised by that largest size);
- the best test accuracy with at most 0.5% and 0.1% of the base model's parameters trainable;
- search cost in units of one full-fidelity training run (optimiser steps of every trial, promotions included,
  divided by the final level's steps; steps rather than seconds, so machine load does not change it);
- `fronts.png`: every validation front and the baselines.
Results go to OUT/results.json and OUT/results.md (the tables printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import peft_autoconfig  # noqa: F401  (registers the methods)
from peft import PeftConfig
from peft_autoconfig import MixedPetConfig, UniPELTConfig, count_trainable_parameters
from peft_autoconfig.search import parse_recipe, run_search
from peft_autoconfig.search.pareto import hypervolume
from peft_autoconfig.search.recipe import resolve_model
from peft_autoconfig.training.runner import RunConfig, run


def base_recipe(smoke: bool, data_dir: str | None) -> dict[str, Any]:
    """The search settings shared by every algorithm and seed."""
    if smoke:
        return {
            "model": data_dir + "/model",
            "task": data_dir + "/task",  # a folder of train/validation/test csv files (columns sentence,label)
            "objectives": ["metric", "trainable_parameters"],
            "algorithm": {"name": "nsga2", "n_trials": 4, "pop_size": 2},
            "space": {"modules": ["serial_adapter", "parallel_adapter", "prefix"],
                      "sizes": {"serial_adapter": [0, 2, 8], "parallel_adapter": [0, 2, 8], "prefix": [0, 2]}},
            "training": {"learning_rate": 1.0e-2, "batch_size": 8, "max_length": 16},
            "fidelity": {"levels": [{"train_subset": 64, "max_steps": 2}, {"train_subset": 128, "max_steps": 4}],
                         "eta": 2},
        }
    return {
        "model": "minilm",
        "task": "rotten_tomatoes",
        "objectives": ["metric", "trainable_parameters"],
        "algorithm": {"name": "nsga2", "n_trials": 12, "pop_size": 6},
        "space": {"modules": ["serial_adapter", "parallel_adapter", "prefix"],
                  "sizes": {"serial_adapter": [0, 3, 6, 12, 24, 48, 96, 192],
                            "parallel_adapter": [0, 3, 6, 12, 24, 48, 96, 192],
                            "prefix": [0, 2, 4, 8, 16, 32]}},
        "training": {"learning_rate": 1.0e-2, "batch_size": 16, "max_length": 32, "eval_subset": 400},
        "fidelity": {"levels": [{"train_subset": 1280, "max_steps": 80}, {"train_subset": 3840, "max_steps": 240}],
                     "eta": 3},
    }


def baselines(hidden_size: int) -> dict[str, PeftConfig]:
    reduced = max(1, hidden_size // 16)
    return {
        "LoRA r=8 q,v": MixedPetConfig(lora_rank=8, task_type="SEQ_CLS"),
        f"serial adapter ({reduced})": MixedPetConfig(serial_adapter_size=reduced, task_type="SEQ_CLS"),
        f"parallel adapter ({reduced})": MixedPetConfig(parallel_adapter_size=reduced, task_type="SEQ_CLS"),
        "prefix (10)": MixedPetConfig(prefix_length=10, task_type="SEQ_CLS"),
        "UniPELT (defaults)": UniPELTConfig(task_type="SEQ_CLS"),
    }


def train_final(recipe: dict, model_path: str, config: PeftConfig, split: str, seed: int) -> dict[str, Any]:
    """Train `config` at the recipe's final fidelity and score it on `split`."""
    training = dict(recipe["training"])
    training.update(recipe["fidelity"]["levels"][-1])
    result = run(RunConfig(model_name_or_path=model_path, task=recipe["task"], peft_config=config, seed=seed,
                           eval_split=split, save_adapter=False, show_progress=False, **training))
    return {"metric": float(result.metric_value), "trainable_parameters": int(result.trainable_parameters),
            "wall_time_s": float(result.wall_time_s)}


def normalised_front(points: list[dict], max_parameters: int) -> np.ndarray:
    return np.array([[-p["metric"], p["trainable_parameters"] / max_parameters] for p in points], dtype=float)


def best_under(entries: list[dict], budget: float) -> tuple[float | None, str | None]:
    eligible = [e for e in entries if e["trainable_parameters"] <= budget]
    if not eligible:
        return None, None
    best = max(eligible, key=lambda e: e["test_metric"])
    return best["test_metric"], best["name"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (searches resume from their journals)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algorithms", nargs="+", default=["nsga2", "random"])
    parser.add_argument("--smoke", action="store_true", help="tiny model + synthetic task; needs --data-dir")
    parser.add_argument("--data-dir", help="smoke mode: folder with model/ and task/{train,validation,test}.csv")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe_template = base_recipe(args.smoke, args.data_dir)
    model_path = resolve_model(recipe_template["model"])
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path)
    base_parameters = _base_model_parameters(model_path)
    started = time.perf_counter()

    # -- baselines at the final fidelity, scored on validation and test ----------------------------------------------
    baseline_rows = []
    for name, config in baselines(model_config.hidden_size).items():
        validation = train_final(recipe_template, model_path, config, "validation", seed=0)
        test = train_final(recipe_template, model_path, config, "test", seed=0)
        assert validation["trainable_parameters"] == count_trainable_parameters(config, model_config)
        baseline_rows.append({"name": name, "metric": validation["metric"], "test_metric": test["metric"],
                              "trainable_parameters": validation["trainable_parameters"],
                              "wall_time_s": validation["wall_time_s"]})
        print(f"baseline {name}: val {validation['metric']:.4f} test {test['metric']:.4f} "
              f"params {validation['trainable_parameters']:,}", flush=True)
    full_run_s = baseline_rows[0]["wall_time_s"]
    full_run_steps = recipe_template["fidelity"]["levels"][-1]["max_steps"]

    # -- searches ----------------------------------------------------------------------------------------------------
    searches = []
    for algorithm in args.algorithms:
        for seed in args.seeds:
            recipe_dict = json.loads(json.dumps(recipe_template))
            recipe_dict["algorithm"]["name"] = algorithm
            recipe_dict["seed"] = seed
            folder = out / f"{algorithm}_seed{seed}"
            result = run_search(parse_recipe(recipe_dict, base_dir=out), folder, progress=not args.smoke)
            document = result.document
            journal = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines() if line.strip()]
            trials = [r for r in journal if r.get("type") == "trial"]
            trial_seconds = sum(r.get("run_wall_time_s") or 0 for r in trials)
            # cost in optimiser steps, independent of machine load: a trial costs its fidelity's max_steps
            trial_steps = sum(r["fidelity"]["max_steps"] for r in trials)
            points = []
            for point in document["points"]:
                config = PeftConfig.from_pretrained(folder / point["config_path"])
                test = train_final(recipe_template, model_path, config, "test", seed=seed)
                points.append({"name": f"{algorithm}/s{seed}/{point['name']}", "metric": point["metric"],
                               "test_metric": test["metric"], "trainable_parameters": point["trainable_parameters"]})
            searches.append({"algorithm": algorithm, "seed": seed, "points": points, "n_trials": len(trials),
                             "trial_seconds": trial_seconds, "trial_steps": trial_steps})
            print(f"search {algorithm} seed {seed}: {len(points)} front points, "
                  f"{document['search']['n_trials']} trials, {trial_seconds:.0f} s of training", flush=True)

    # -- metrics -----------------------------------------------------------------------------------------------------
    max_parameters = max(
        [p["trainable_parameters"] for s in searches for p in s["points"]]
        + [b["trainable_parameters"] for b in baseline_rows]
    )
    reference = [-0.5, 1.1]
    for search in searches:
        search["hypervolume"] = hypervolume(normalised_front(search["points"], max_parameters), reference)
        search["cost_full_runs"] = search["trial_steps"] / full_run_steps
    baseline_front_hv = hypervolume(normalised_front(baseline_rows, max_parameters), reference)
    budgets = {"0.5%": 0.005 * base_parameters, "0.1%": 0.001 * base_parameters}

    summary_rows = []
    for algorithm in args.algorithms:
        runs = [s for s in searches if s["algorithm"] == algorithm]
        entries = [p for s in runs for p in s["points"]]
        hvs = [s["hypervolume"] for s in runs]
        row = {"method": algorithm, "hv_mean": float(np.mean(hvs)), "hv_std": float(np.std(hvs)),
               "hv_per_seed": hvs, "cost_full_runs": float(np.mean([s["cost_full_runs"] for s in runs]))}
        for label, budget in budgets.items():
            row[f"best_test_{label}"], row[f"best_test_{label}_point"] = best_under(entries, budget)
            per_seed = [best_under(s["points"], budget)[0] for s in runs]
            row[f"best_test_{label}_per_seed"] = per_seed
        summary_rows.append(row)
    baseline_summary = {"method": "hand-designed baselines", "hv_mean": baseline_front_hv, "hv_std": 0.0,
                        "hv_per_seed": [baseline_front_hv], "cost_full_runs": float(len(baseline_rows))}
    for label, budget in budgets.items():
        baseline_summary[f"best_test_{label}"], baseline_summary[f"best_test_{label}_point"] = best_under(
            baseline_rows, budget)
    summary_rows.append(baseline_summary)

    report = format_report(summary_rows, baseline_rows, searches, base_parameters, reference, full_run_s,
                           time.perf_counter() - started)
    print(report)
    (out / "results.md").write_text(report + "\n")
    results = {"summary": summary_rows, "baselines": baseline_rows, "searches": searches,
               "base_parameters": base_parameters, "reference_point": reference, "max_parameters": max_parameters,
               "full_run_s": full_run_s}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    plot_fronts(out / "fronts.png", searches, baseline_rows, base_parameters)
    return results


def _base_model_parameters(model_path: str) -> int:
    from transformers import AutoModel

    return sum(p.numel() for p in AutoModel.from_pretrained(model_path).parameters())


def _fmt(value: float | None, point: str | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" + (f" ({point})" if point else "")


def format_report(summary, baselines_rows, searches, base_parameters, reference, full_run_s, wall) -> str:
    lines = [
        f"base model parameters: {base_parameters:,}; 0.5% = {0.005 * base_parameters:,.0f}, "
        f"0.1% = {0.001 * base_parameters:,.0f}",
        f"hypervolume reference point: accuracy {-reference[0]}, parameters {reference[1]} x largest measured config",
        f"one full run = one training run at the final fidelity (search cost counts optimiser steps of all trials, "
        f"including promotions); the LoRA r=8 full run took {full_run_s:.1f} s; benchmark wall time {wall / 60:.1f} min",
        "",
        "| method | HV mean ± std (per seed) | search cost (full runs) | best test acc ≤0.5% | best test acc ≤0.1% |",
        "|---|---|---:|---|---|",
    ]
    for row in summary:
        per_seed = ", ".join(f"{v:.4f}" for v in row["hv_per_seed"])
        lines.append(
            f"| {row['method']} | {row['hv_mean']:.4f} ± {row['hv_std']:.4f} ({per_seed}) | {row['cost_full_runs']:.1f} | "
            f"{_fmt(row['best_test_0.5%'], row['best_test_0.5%_point'])} | "
            f"{_fmt(row['best_test_0.1%'], row['best_test_0.1%_point'])} |"
        )
    lines += ["", "| baseline | trainable params | % of base | val acc | test acc |", "|---|---:|---:|---:|---:|"]
    for row in baselines_rows:
        lines.append(f"| {row['name']} | {row['trainable_parameters']:,} | "
                     f"{100 * row['trainable_parameters'] / base_parameters:.3f}% | {row['metric']:.4f} | "
                     f"{row['test_metric']:.4f} |")
    lines += ["", "| search | front point | trainable params | val acc | test acc |", "|---|---|---:|---:|---:|"]
    for search in searches:
        for point in search["points"]:
            lines.append(f"| {search['algorithm']} s{search['seed']} | {point['name']} | "
                         f"{point['trainable_parameters']:,} | {point['metric']:.4f} | {point['test_metric']:.4f} |")
    return "\n".join(lines)


def plot_fronts(path: Path, searches: list[dict], baseline_rows: list[dict], base_parameters: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = {"nsga2": "tab:blue", "random": "tab:orange"}
    for search in searches:
        points = sorted(search["points"], key=lambda p: p["trainable_parameters"])
        axis.step([100 * p["trainable_parameters"] / base_parameters for p in points], [p["metric"] for p in points],
                  where="post", marker="o", alpha=0.7, color=colours.get(search["algorithm"], "grey"),
                  label=f"{search['algorithm']} seed {search['seed']}")
    for row in baseline_rows:
        x = 100 * row["trainable_parameters"] / base_parameters
        axis.scatter([x], [row["metric"]], marker="*", s=140, color="black", zorder=5)
        axis.annotate(row["name"], (x, row["metric"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("trainable parameters (% of base model, log)")
    axis.set_ylabel("validation accuracy (final fidelity)")
    axis.set_title("Search fronts vs hand-designed PEFT configs")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
