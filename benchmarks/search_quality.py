"""Search quality under the project's protocol: the searched front against hand-designed baselines at the user's
real budget, NSGA-II against random search, the low fidelity's ranking and the search's cost.

    python benchmarks/search_quality.py --recipe recipes/rotten_tomatoes.yaml --out runs/bench --workers 2
    python benchmarks/search_quality.py --recipe recipes/rotten_tomatoes.yaml --out runs/bench \\
        --algorithms nsga2 random --seeds 0 1 2 --workers 2          # + the algorithm comparison
    python benchmarks/search_quality.py ... --algorithms nsga2 random --seeds 0 1 2 --first-level-only  # cheaper
    python benchmarks/search_quality.py --recipe R --out O --pool-final-runs --rivals supernet_81864 supernet_9216
        # baselines `{name, config}` that another search found stand with the front: verdicts, and the two fronts'
        # report-split hypervolume seed by seed
    python benchmarks/search_quality.py --recipe recipes/rotten_tomatoes.yaml --out runs/bench --algorithms mobo nsga2 \
        random --seeds 0 1 2 --variant mobo_warm mobo warm_start=/abs/runs/other_task/mobo-s0 --workers 2  # issue 14

Every number comes from `peft-autoconfig search` runs of the recipe (one per algorithm and seed, resumable: each has
its own folder under OUT). The first run (first algorithm, first seed) keeps the recipe's `final:` stage: its front
points and the recipe's baselines are re-trained at the final budget under one protocol (per-block learning rates,
same data, same seeds) and reported on the report split, which nothing was selected on. The other runs stop after
selection (they only feed the hypervolume comparison), so the comparison costs searches, not final stages.

Reported (OUT/results.md and OUT/results.json, printed too):
- the final table: each front point and baseline, trainable parameters (and % of the backbone), selection value with
  its standard error, report mean +- standard error; whether a point with <= 0.5 % of the backbone is within one
  standard error of full fine-tuning, and whether each baseline is matched or beaten by a point with no more
  parameters;
- hypervolume of each run's selection front (accuracy gain over 0.5 x share of the backbone's parameters, one
  reference point for all), mean +- sd per algorithm, and Welch's t-test between the first two algorithms; the same
  for the hypervolume of the first fidelity level's trials (what the strategies search on). With
  `--first-level-only` the comparison runs (all but the first) stop after the first level: the strategies are
  compared where they act (promotion is the same rule for all), at about half the cost, on the level-0 statistics;
- the search's cost in units of one final-budget run (optimiser steps of every search and promotion trial divided by
  the steps of one final run; steps, so machine load does not change it), baselines and final stage excluded;
- hypervolume against trials at the first fidelity level per algorithm (mean +- sd over seeds, OUT/hv_vs_trials.png)
  and the trials each algorithm needs to reach random search's mean final level-0 hypervolume (sample efficiency);
- Kendall tau between the first and the last fidelity level on every point measured at both; with `--rank-all`,
  every level-0 point of the first run is also trained at the last level (in OUT/<run>/ranking/, a copy of the run's
  journal plus those trials, so the search's own journal and front stay as they were) and tau covers all of them.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from peft_autoconfig.front import Front
from peft_autoconfig.search import parse_recipe, read_journal, run_search
from peft_autoconfig.search.baselines import backbone_parameter_count
from peft_autoconfig.search.pareto import hypervolume


def run_recipes(raw: dict[str, Any], algorithms: list[str], seeds: list[int],
                variants: dict[str, tuple[str, dict[str, Any]]] | None = None,
                first_level_only: bool = False) -> list[tuple[str, int, dict]]:
    """(label, seed, recipe mapping) per run; only the first keeps `final:` and `baselines:` (and, with
    `first_level_only`, the fidelity levels after the first). A label is an algorithm name, or a variant's label
    (`variants[label] = (algorithm, algorithm fields)`: e.g. a warm-started `mobo`), which runs that algorithm with
    those fields set."""
    runs = []
    for i, (label, seed) in enumerate((a, s) for a in algorithms for s in seeds):
        recipe = copy.deepcopy(raw)
        algorithm, fields = (variants or {}).get(label, (label, {}))
        recipe.setdefault("algorithm", {}).update({"name": algorithm, **fields})
        recipe["seed"] = seed
        if i > 0:
            recipe.pop("final", None)
            recipe["baselines"] = []
            if first_level_only:
                recipe["fidelity"] = {**recipe["fidelity"], "levels": recipe["fidelity"]["levels"][:1]}
        runs.append((label, seed, recipe))
    return runs


def parse_variant(words: list[str]) -> tuple[str, tuple[str, dict[str, Any]]]:
    """`LABEL ALGORITHM [FIELD=VALUE ...]` (values read as YAML) -> (label, (algorithm, fields))."""
    if len(words) < 2 or any("=" not in w for w in words[2:]):
        raise SystemExit(f"--variant needs LABEL ALGORITHM [FIELD=VALUE ...], got {' '.join(words)!r}")
    fields = {k: yaml.safe_load(v) for k, v in (w.split("=", 1) for w in words[2:])}
    return words[0], (words[1], fields)


def steps_of(fidelity: dict[str, Any], batch_size: int, train_size: int) -> float:
    """Optimiser steps of one run at `fidelity` (a fidelity level or the final budget)."""
    if fidelity.get("max_steps") not in (None, -1):
        return float(fidelity["max_steps"])
    examples = min(fidelity.get("train_subset") or train_size, train_size)
    return math.ceil(examples / batch_size) * float(fidelity.get("num_epochs") or 1.0)


def level_scores(trials: list[dict], level: int, read: str = "metric") -> dict[str, float]:
    """{point (its canonical `x` as JSON): score} of the successful search and promotion trials at fidelity `level`.
    `read` is `metric` (what the search selects on) or `-loss` (the validation loss, negated: a continuous score
    that may rank better than accuracy on a small split); trials without that score are left out."""
    scores = {}
    for t in trials:
        if t["kind"] not in ("search", "promotion") or t["level"] != level or t["status"] != "ok" or t["x"] is None:
            continue
        value = t["metric"] if read == "metric" else (t.get("metrics") or {}).get("loss")
        if value is not None:
            scores[json.dumps(t["x"], sort_keys=True)] = float(value) if read == "metric" else -float(value)
    return scores


def tau_on_common(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Kendall tau (and its p-value) between two {point: score} maps over the points in both; None below 3."""
    from scipy.stats import kendalltau

    common = sorted(set(a) & set(b))
    if len(common) < 3:
        return {"tau": None, "p_value": None, "n": len(common)}
    tau, p = kendalltau([a[k] for k in common], [b[k] for k in common])
    return {"tau": float(tau), "p_value": float(p), "n": len(common)}


def kendall_tau(trials: list[dict], low: str = "metric") -> dict[str, Any]:
    """Kendall tau between level 0 and the last level's metric over the points measured at both. `low` is what is
    read at level 0 (`level_scores`' `read`)."""
    levels = sorted({t["level"] for t in trials if t["kind"] in ("search", "promotion")})
    if len(levels) < 2:
        return {"tau": None, "p_value": None, "n": 0}
    return tau_on_common(level_scores(trials, levels[0], low), level_scores(trials, levels[-1]))


def rank_all_levels(recipe: Any, run_dir: Path, workers: int) -> dict[str, Any]:
    """Every level-0 point of the run in `run_dir` trained at the last fidelity level, in `run_dir/ranking/` (seeded
    with a copy of the run's journal, so promoted points are not trained again); Kendall tau over all of them."""
    import shutil

    from peft_autoconfig.search.driver import Search

    ranking = run_dir / "ranking"
    ranking.mkdir(exist_ok=True)
    if not (ranking / "journal.jsonl").exists():
        shutil.copyfile(run_dir / "journal.jsonl", ranking / "journal.jsonl")
    trials = read_journal(run_dir / "journal.jsonl")
    points = [t["x"] for t in trials if t["kind"] == "search" and t["level"] == 0 and t["status"] == "ok" and t["x"]]
    search = Search(recipe, ranking, workers=workers, progress=True)
    search.evaluate_points(points, len(recipe.fidelity_levels) - 1)
    ranked = read_journal(ranking / "journal.jsonl")
    return {**kendall_tau(ranked), "from_loss": kendall_tau(ranked, low="-loss")}


def hv_tests(searches: list[dict], algorithms: list[str], keys: list[str]) -> dict[str, Any] | None:
    """Welch's t-test and the Mann-Whitney U test between the first two algorithms' values of each key (over
    seeds); None with fewer than two algorithms or fewer than two runs of one."""
    from scipy.stats import mannwhitneyu, ttest_ind

    if len(algorithms) < 2:
        return None
    tests = {}
    for key in keys:
        a, b = ([s[key] for s in searches if s["algorithm"] == name] for name in algorithms)
        if min(len(a), len(b)) < 2:
            return None
        statistic, p_value = ttest_ind(a, b, equal_var=False)
        u = mannwhitneyu(a, b, alternative="two-sided")
        tests[key] = {"algorithms": list(algorithms), "welch_t": float(statistic), "p_value": float(p_value),
                      "mann_whitney_u": float(u.statistic), "mann_whitney_p": float(u.pvalue)}
    return tests


def hv_curve(trials: list[dict], backbone: int) -> list[float]:
    """Normalised hypervolume of the level-0 search trials after each trial, in trial order: what a strategy has
    found after n trials, on the level it searches at (the sample-efficiency curve; failed trials add nothing)."""
    search = sorted((t for t in trials if t["kind"] == "search" and t["level"] == 0), key=lambda t: t["trial_id"])
    F, curve = [], []
    for t in search:
        if t["status"] == "ok":
            F.append((float(t["metric"]), t["trainable_parameters"]))
        curve.append(normalised_hv(F, backbone))
    return curve


def trials_to_reach(curve: list[float], target: float) -> int | None:
    """The first trial count at which `curve` reaches `target` (None: never)."""
    return next((i + 1 for i, value in enumerate(curve) if value >= target - 1e-12), None)


def curve_summary(searches: list[dict], algorithms: list[str]) -> dict[str, Any]:
    """Mean +- sd HV curve per algorithm (over seeds, to the shortest run) and the trials each needs, on average,
    to reach the reference algorithm's mean final level-0 HV (`random` when it ran, else the last algorithm)."""
    reference = "random" if "random" in algorithms else algorithms[-1]
    curves = {}
    for algorithm in algorithms:
        runs = [s["hv_curve"] for s in searches if s["algorithm"] == algorithm and s["hv_curve"]]
        if runs:
            n = min(len(c) for c in runs)
            stacked = np.array([c[:n] for c in runs])
            curves[algorithm] = {"mean": stacked.mean(axis=0).tolist(), "sd": stacked.std(axis=0).tolist(), "runs": len(runs)}
    target = curves[reference]["mean"][-1] if reference in curves else None
    reach = {a: (trials_to_reach(c["mean"], target) if target is not None else None) for a, c in curves.items()}
    return {"reference": reference, "target_hv": target, "curves": curves, "trials_to_reach": reach}


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Mean level-0 hypervolume against trials per algorithm, +- one sd shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for algorithm, curve in summary["curves"].items():
        x = np.arange(1, len(curve["mean"]) + 1)
        mean, sd = np.array(curve["mean"]), np.array(curve["sd"])
        ax.plot(x, mean, label=f"{algorithm} ({curve['runs']} seeds)")
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.2)
    if summary["target_hv"] is not None:
        ax.axhline(summary["target_hv"], color="grey", linestyle=":", label=f"{summary['reference']} final (mean)")
    ax.set_xlabel("trials (first fidelity level)")
    ax.set_ylabel("hypervolume (normalised)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def normalised_hv(points: list[tuple[float, int]], backbone: int) -> float:
    """Hypervolume of (metric, trainable parameters) points: accuracy gain over 0.5 times the share of the
    backbone's parameters left untrained, reference (0.5, 1.0); one scale for every run and every curve."""
    F = np.array([[-metric, parameters / backbone] for metric, parameters in points])
    return hypervolume(F, np.array([-0.5, 1.0])) if len(F) else 0.0


def normalised_hypervolume(front: Front, backbone: int) -> float:
    """`normalised_hv` of a front's selection values."""
    return normalised_hv([(p.selection.value, p.trainable_parameters) for p in front.points if p.selection], backbone)


def pooled_final_runs(trials: list[dict], name: str, budget: dict[str, Any]) -> dict[str, Any] | None:
    """Every successful final run of `name` (a baseline's name, or `trial:<id>` for a front point) at `budget` in the
    journal, whatever seeds the recipe lists now: mean, sd (ddof 1) and the binomial standard error of the mean."""
    from peft_autoconfig.search.trial import standard_error

    by_seed: dict[int, dict] = {}
    for t in trials:  # one run per seed (a config re-keyed by an older version may have been run twice)
        if (t["kind"] == "final" and t["status"] == "ok" and t["name"] == name
                and all(t["fidelity"].get(k) == v for k, v in budget.items())):
            by_seed.setdefault(t["seed"], t)
    runs = list(by_seed.values())
    if not runs:
        return None
    values = [float(t["metric"]) for t in runs]
    mean = float(np.mean(values))
    return {"mean": mean, "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "se": standard_error(runs[0]["metric_name"], mean, runs[0]["n_eval"]), "seeds": sorted(t["seed"] for t in runs),
            "by_seed": {int(t["seed"]): float(t["metric"]) for t in runs}}


def hand_designs(recipe: Any) -> tuple[Any, dict[str, str]]:
    """The recipe's space and {point key: name} of its baselines and `points_to_evaluate` that are points of it, so
    the report can say when a front point *is* a hand design (one the search was seeded with)."""
    from peft_autoconfig.search.baselines import baseline_configs, encode_config
    from peft_autoconfig.search.recipe import resolve_model
    from peft_autoconfig.search.space import SearchSpace

    space = SearchSpace.from_pretrained(resolve_model(recipe.model), recipe.space)
    specs = list(recipe.baselines) + list(recipe.algorithm.points_to_evaluate or [])
    keys = {}
    for name, config in baseline_configs(specs, space).configs.items():
        try:
            keys[space.key(encode_config(config, space))] = name
        except ValueError:  # full fine-tuning, UniPELT, outside the space: no front point can be it
            continue
    return space, keys


def final_rows(front: Front, backbone: int, pooled: list[dict] | None = None, budget: dict | None = None,
               designs: tuple[Any, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """One row per front point and baseline; with `pooled` (the journal's trials), the test columns pool every
    final run of the journal (`pooled_final_runs`) instead of the recipe's seeds; with `designs` (`hand_designs`),
    `same_as` names the hand design a front point is."""
    rows = []
    for point in [*front.points, *front.baselines]:
        same_as = None
        if designs is not None and point.kind == "search" and point.x is not None:
            same_as = designs[1].get(designs[0].key(point.x))
        rows.append({
            "same_as": same_as,
            "name": point.name, "kind": point.kind, "trainable_parameters": point.trainable_parameters,
            "percent": 100.0 * point.trainable_parameters / backbone,
            "selection": point.selection.value if point.selection else None,
            "selection_se": point.selection.standard_error if point.selection else None,
            "test": point.report.mean if point.report else None,
            "test_se": point.report.standard_error if point.report else None,
            "test_sd": point.report.sd if point.report else None,
            "seeds": [],  # seed numbers: from the journal with `pooled`; front.json keeps per-seed values only
            "n_seeds": len(point.report.seeds) if point.report else 0,
        })
        if pooled is not None:
            name = f"trial:{point.trial_id}" if point.kind == "search" else point.name
            runs = pooled_final_runs(pooled, name, budget or {})
            if runs is not None:
                rows[-1].update(test=runs["mean"], test_se=runs["se"], test_sd=runs["sd"], seeds=runs["seeds"],
                                n_seeds=len(runs["seeds"]), by_seed=runs["by_seed"])
    return rows


def verdicts(rows: list[dict[str, Any]], budget_percent: float = 0.5, rivals: tuple[str, ...] = ()) -> list[str]:
    """The issue's claims, checked on the report split. `rivals` names baseline rows that stand with the front
    points (configurations another search found, e.g. a `supernet` search's, re-trained here as `{name, config}`
    baselines under the same final stage); they are compared, not judged."""
    points = [r for r in rows if (r["kind"] == "search" or r["name"] in rivals) and r["test"] is not None]
    lines = []
    full = next((r for r in rows if r["name"] == "full_finetuning" and r["test"] is not None), None)
    small = [r for r in points if r["percent"] <= budget_percent]
    if full and small:
        best = max(small, key=lambda r: r["test"])
        gap = full["test"] - best["test"]
        ok = gap <= (full["test_se"] or 0.0)
        lines.append(f"best point <= {budget_percent} % ({_label(best, rivals)}, {best['percent']:.3f} %): test "
                     f"{best['test']:.4f} vs full fine-tuning {full['test']:.4f} (gap {gap:+.4f}, one SE "
                     f"{full['test_se']:.4f}): {'within one SE' if ok else 'NOT within one SE'}" + paired_seeds(full, best))
    judged = (r for r in rows if r["kind"] == "baseline" and r["test"] is not None
              and r["name"] != "full_finetuning" and r["name"] not in rivals)
    for baseline in judged:
        # a front point that is this baseline's own configuration (a seeded hand design) does not count as a rival
        candidates = [r for r in points if r["trainable_parameters"] <= baseline["trainable_parameters"]
                      and r.get("same_as") != baseline["name"]]
        if not candidates:
            own = any(r.get("same_as") == baseline["name"] for r in points)
            lines.append(f"{baseline['name']}: no front point with <= {baseline['trainable_parameters']:,} parameters"
                         + (" other than its own configuration" if own else ""))
            continue
        best = max(candidates, key=lambda r: r["test"])
        diff = best["test"] - baseline["test"]
        word = "beaten" if diff > 0 else ("matched" if -diff <= (baseline["test_se"] or 0.0) else "NOT matched")
        lines.append(f"{baseline['name']} ({baseline['test']:.4f}, {baseline['trainable_parameters']:,} params): {word} by "
                     f"{_label(best, rivals)} ({best['test']:.4f}, {best['trainable_parameters']:,} params, diff "
                     f"{diff:+.4f})" + paired_seeds(baseline, best))
    return lines


def _label(row: dict[str, Any], rivals: tuple[str, ...]) -> str:
    """A verdict's name for a front point (`p00 = lora_r8` when it is a hand design) or a rival (`x (rival)`)."""
    if row["name"] in rivals:
        return f"{row['name']} (rival)"
    return f"{row['name']} = {row['same_as']}" if row.get("same_as") else row["name"]


def report_hv_by_seed(rows: list[dict[str, Any]], rivals: tuple[str, ...], backbone: int) -> dict[str, Any] | None:
    """The front's and the rivals' hypervolume on the report split, seed by seed (`normalised_hv` of each row's
    final run at that seed), at the seeds where every front point and every rival has a final run: two fronts
    trained under one final stage compared as fronts, not point by point. None without rivals or common seeds."""
    front = [r for r in rows if r["kind"] == "search" and r.get("by_seed")]
    rival_rows = [r for r in rows if r["name"] in rivals and r.get("by_seed")]
    if not front or not rival_rows:
        return None
    seeds = sorted(set.intersection(*(set(r["by_seed"]) for r in front + rival_rows)))
    if not seeds:
        return None

    def hv(group: list[dict[str, Any]], seed: int) -> float:
        return normalised_hv([(r["by_seed"][seed], r["trainable_parameters"]) for r in group], backbone)

    result = {"seeds": seeds, "front": [hv(front, s) for s in seeds], "rivals": [hv(rival_rows, s) for s in seeds],
              "front_points": [r["name"] for r in front], "rival_points": [r["name"] for r in rival_rows]}
    result["front_ahead"] = sum(a > b for a, b in zip(result["front"], result["rivals"]))
    result["paired_p"] = None
    if len(seeds) >= 2:
        from scipy.stats import ttest_rel

        p_value = ttest_rel(result["front"], result["rivals"]).pvalue
        result["paired_p"] = None if p_value != p_value else float(p_value)
    return result


def paired_seeds(baseline: dict[str, Any], point: dict[str, Any]) -> str:
    """The comparison seed by seed, where both rows have final runs at >= 2 common seeds (`by_seed`, from the
    journal): the same seed trains on the same subset and both are scored on the same sentences, so the per-seed
    differences can show a consistent gap that one standard error of the mean (the verdict's yardstick) hides."""
    common = sorted(set(baseline.get("by_seed") or {}) & set(point.get("by_seed") or {}))
    if len(common) < 2:
        return ""
    from scipy.stats import ttest_rel

    ahead = [baseline["by_seed"][s] for s in common]
    other = [point["by_seed"][s] for s in common]
    wins = sum(a > b for a, b in zip(ahead, other))
    test = ttest_rel(ahead, other)
    p_value = "n/a" if test.pvalue != test.pvalue else f"{test.pvalue:.3f}"   # NaN when every difference is equal
    return (f"; seed by seed ({', '.join(map(str, common))}): {baseline['name']} ahead on {wins} of {len(common)}, "
            f"paired t p = {p_value}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="a search recipe with a `final:` section and baselines")
    parser.add_argument("--out", required=True, help="output folder (each run resumes from its journal)")
    parser.add_argument("--algorithms", nargs="+", default=["nsga2"])
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="WORD",
                        help="LABEL ALGORITHM [FIELD=VALUE ...]: another run per seed of ALGORITHM with those "
                             "`algorithm.*` fields, reported as LABEL (e.g. `--variant mobo_warm mobo "
                             "warm_start=runs/other/mobo-s1`: warm against cold start)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pool-final-runs", action="store_true",
                        help="report every final run in the first run's journal (e.g. extra seeds of some points, run "
                             "with `final.max_parameters`), not only the recipe's `final.seeds`")
    parser.add_argument("--rank-all", action="store_true",
                        help="train every level-0 point of the first run at the last level too (OUT/<run>/ranking/) "
                             "and report Kendall tau on all of them, not only on the promoted ones")
    parser.add_argument("--rivals", nargs="+", default=[], metavar="BASELINE",
                        help="baselines of the recipe that stand with the front in the verdicts (configurations another "
                             "search found, re-trained here as `{name, config}` baselines): compared, not judged")
    parser.add_argument("--first-level-only", action="store_true",
                        help="the comparison runs (all but the first) search at the first fidelity level only, without "
                             "promotion; compare the algorithms on the level-0 hypervolume")
    args = parser.parse_args(argv)

    raw = yaml.safe_load(Path(args.recipe).read_text())
    baseline_names = [spec.name for spec in parse_recipe(raw).baselines]
    rivals = tuple(args.rivals)
    if set(rivals) - set(baseline_names):
        raise SystemExit(f"--rivals: {sorted(set(rivals) - set(baseline_names))} not among the recipe's `baselines` "
                         f"({baseline_names})")
    base = Path(args.recipe).resolve().parent
    out = Path(args.out)
    start = time.perf_counter()
    runs = []
    variants = dict(parse_variant(words) for words in args.variant)
    labels = list(args.algorithms) + [label for label in variants if label not in args.algorithms]
    for algorithm, seed, mapping in run_recipes(raw, labels, args.seeds, variants, args.first_level_only):
        recipe = parse_recipe(mapping, base_dir=base)
        result = run_search(recipe, out / f"{algorithm}-s{seed}", workers=args.workers, progress=True)
        runs.append({"algorithm": algorithm, "seed": seed, "recipe": recipe, "dir": result.out_dir})

    primary = runs[0]["recipe"]
    ranking = rank_all_levels(primary, Path(runs[0]["dir"]), args.workers) if args.rank_all else None
    from transformers import AutoConfig

    from peft_autoconfig.search.recipe import resolve_model
    from peft_autoconfig.training.tasks import load_splits, load_task

    backbone = backbone_parameter_count(AutoConfig.from_pretrained(resolve_model(primary.model)))
    train_size = len(load_splits(load_task(primary.task))["train"])
    batch = primary.training.batch_size or 16
    final_steps = steps_of(primary.final.budget(), batch, train_size) if primary.final else None

    searches = []
    for run in runs:
        front = Front.load(run["dir"])
        trials = read_journal(Path(run["dir"]) / "journal.jsonl")
        searched = [t for t in trials if t["kind"] in ("search", "promotion")]
        steps = sum(steps_of(t["fidelity"], batch, train_size) for t in searched)
        searches.append({
            "algorithm": run["algorithm"], "seed": run["seed"], "hypervolume": normalised_hypervolume(front, backbone),
            "n_trials": len(searched), "n_failed": sum(t["status"] != "ok" for t in searched), "steps": steps,
            "cost_final_runs": steps / final_steps if final_steps else None, "kendall": kendall_tau(trials),
            "hv_curve": (curve := hv_curve(trials, backbone)), "hv_level0": curve[-1] if curve else 0.0,
            "front": [{"name": p.name, "trainable_parameters": p.trainable_parameters,
                       "selection": p.selection.value if p.selection else None} for p in front.points],
        })
    summary = []
    for algorithm in labels:
        row: dict[str, Any] = {"algorithm": algorithm}
        for key, prefix in (("hypervolume", "hv"), ("hv_level0", "hv0")):
            values = [s[key] for s in searches if s["algorithm"] == algorithm]
            row.update({f"{prefix}_mean": float(np.mean(values)),
                        f"{prefix}_sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values)})
        summary.append(row)
    # the front's HV compares like with like only when every run has the same levels
    test = hv_tests(searches, args.algorithms[:2], ["hv_level0"] if args.first_level_only else ["hypervolume", "hv_level0"])
    curves = curve_summary(searches, labels)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, out / "hv_vs_trials.png")
    pooled = read_journal(Path(runs[0]["dir"]) / "journal.jsonl") if args.pool_final_runs else None
    budget = primary.final.budget() if primary.final else None
    rows = final_rows(Front.load(runs[0]["dir"]), backbone, pooled, budget, hand_designs(primary))
    results = {"backbone_parameters": backbone, "final_steps": final_steps, "final": rows, "verdicts": verdicts(rows, rivals=rivals),
               "report_hv_by_seed": report_hv_by_seed(rows, rivals, backbone),
               "kendall_all": ranking, "hv_curves": curves, "first_level_only": args.first_level_only,
               "searches": searches, "summary": summary, "hv_test": test, "wall_time_s": time.perf_counter() - start}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = format_report(results)
    (out / "results.md").write_text(text)
    print(text)
    return results


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(results: dict[str, Any]) -> str:
    lines = ["## Final stage (report split, never used for selection)", "",
             "| name | kind | trainable params | % of backbone | selection (val) +- SE | test +- SE | sd over seeds | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results["final"]:
        kind = f"{r['kind']} (= {r['same_as']})" if r.get("same_as") else r["kind"]
        lines.append(f"| {r['name']} | {kind} | {r['trainable_parameters']:,} | {r['percent']:.3f} | "
                     f"{_num(r['selection'])} +- {_num(r['selection_se'])} | {_num(r['test'])} +- {_num(r['test_se'])} | "
                     f"{_num(r['test_sd']) if r['n_seeds'] > 1 else '-'} | {','.join(map(str, r['seeds'])) or r['n_seeds'] or '-'} |")
    lines += ["", *[f"- {v}" for v in results["verdicts"]]]
    by_seed = results.get("report_hv_by_seed")
    if by_seed:
        pairs = ", ".join(f"seed {s}: {a:.5f} vs {b:.5f}" for s, a, b in zip(by_seed["seeds"], by_seed["front"],
                                                                            by_seed["rivals"]))
        lines.append(f"- report-split hypervolume, front ({', '.join(by_seed['front_points'])}) vs rivals "
                     f"({', '.join(by_seed['rival_points'])}): {pairs}; front ahead on {by_seed['front_ahead']} of "
                     f"{len(by_seed['seeds'])}, paired t p = {_num(by_seed['paired_p'], 3)}")
    lines += ["", "## Searches", "",
              "| algorithm | seed | trials | failed | HV (normalised) | level-0 HV | cost (final-budget runs) | Kendall tau (n) |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in results["searches"]:
        k = s["kendall"]
        tau = f"{k['tau']:.3f} ({k['n']}, p={k['p_value']:.3f})" if k["tau"] is not None else f"- ({k['n']})"
        lines.append(f"| {s['algorithm']} | {s['seed']} | {s['n_trials']} | {s['n_failed']} | {s['hypervolume']:.5f} | "
                     f"{s['hv_level0']:.5f} | {_num(s['cost_final_runs'], 2)} | {tau} |")
    lines += ["", "| algorithm | HV mean +- sd | level-0 HV mean +- sd | runs |", "|---|---:|---:|---:|"]
    lines += [f"| {s['algorithm']} | {s['hv_mean']:.5f} +- {s['hv_sd']:.5f} | {s['hv0_mean']:.5f} +- {s['hv0_sd']:.5f} "
              f"| {s['n']} |" for s in results["summary"]]
    if results.get("first_level_only"):
        lines.append("\nWith --first-level-only the first run's selection front is a last-level front and the others' "
                     "are level-0 fronts: compare the level-0 HV.")
    for key, test in (results["hv_test"] or {}).items():
        label = "level-0 HV" if key == "hv_level0" else "HV of the selection front"
        lines.append(f"\n{' vs '.join(test['algorithms'])}, {label}: Welch's t = {test['welch_t']:.3f}, "
                     f"p = {test['p_value']:.3f}; Mann-Whitney U = {test['mann_whitney_u']:.1f}, "
                     f"p = {test['mann_whitney_p']:.3f}")
    curves = results.get("hv_curves")
    if curves and curves["target_hv"] is not None:
        lines += ["", f"Trials (first fidelity level) to reach {curves['reference']}'s mean final level-0 HV "
                      f"({curves['target_hv']:.5f}); curves in hv_vs_trials.png:", "",
                  "| algorithm | trials to reach | of | final level-0 HV (mean) |", "|---|---:|---:|---:|"]
        for algorithm, curve in curves["curves"].items():
            reach = curves["trials_to_reach"][algorithm]
            lines.append(f"| {algorithm} | {reach if reach is not None else 'not reached'} | {len(curve['mean'])} | "
                         f"{curve['mean'][-1]:.5f} |")
    if results.get("kendall_all"):
        k = results["kendall_all"]
        lines.append(f"\nKendall tau, first vs last fidelity level, every searched point of the first run: "
                     f"{_num(k['tau'], 3)} (n = {k['n']}, p = {_num(k['p_value'], 3)}); the first level's validation "
                     f"loss against the last level's metric: {_num(k['from_loss']['tau'], 3)} "
                     f"(p = {_num(k['from_loss']['p_value'], 3)})")
    lines.append(f"\nbenchmark wall time (this invocation): {results['wall_time_s']:.0f} s")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
