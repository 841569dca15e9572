"""The export phase: `front.json` (through `pareto.write_front`), the front's config folders and `pareto.png`.

Each front point and baseline carries `selection` (the metric the search selected on: split, value, standard
error, n) and, after a final stage, `report` (the final runs on the report split: mean, sd and standard error over
the seeds).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..front import load_point_config
from .pareto import default_reference_point, hypervolume, objective_label, write_front
from .recipe import Recipe, hub_id
from .space import SearchSpace
from .trial import TrialRecord, standard_error


def selection(record: TrialRecord) -> dict[str, Any]:
    return {"split": record.eval_split, "metric": record.metric_name, "value": record.metric,
            "standard_error": record.standard_error, "n": record.n_eval}


def report(records: list[TrialRecord], split: str, metric_name: str) -> Optional[dict[str, Any]]:
    """Mean, sd (ddof 1) and standard error of the final runs that succeeded; None when none did.

    The standard error is the binomial one of the mean accuracy on the `n` report examples (the seeds share the
    test set); for other metrics the seeds' standard error `sd / sqrt(k)` (None with one seed).
    """
    ok = sorted((r for r in records if r.ok), key=lambda r: r.seed)
    if not ok:
        return None
    values = [float(r.metric) for r in ok]
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    n = ok[0].n_eval
    se = standard_error(metric_name, mean, n) if metric_name == "accuracy" else (
        sd / math.sqrt(len(values)) if len(values) > 1 else None
    )
    # `seeds` holds one metric value per seed, in seed order (front format 2, `front.Report`); the seed numbers
    # themselves are in the journal
    return {"split": split, "metric": metric_name, "mean": mean, "sd": sd, "standard_error": se, "n": n,
            "seeds": values}


def fidelity_agreement(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """Kendall tau between each fidelity level and the next over the points the search trained at both (same
    seed and split): does the cheap level rank as the costly one? A free check of successive halving on the user's
    own task. Only promoted points enter, the best of the lower level, a narrower range than the space (which
    usually lowers tau); `benchmarks/fidelity_noise.py` measures it on spread points and against several seeds.
    Pairs of levels with fewer than 4 common points are left out (no tau); a level that scored them all alike gives
    no tau either, and `tied_level` names it."""
    from scipy.stats import kendalltau

    by_level: dict[int, dict[tuple, float]] = {}
    for record in records:
        if record.ok and record.x is not None and record.kind in ("search", "promotion") and record.metric is not None:
            point = (json.dumps(record.x, sort_keys=True, default=str), record.seed, record.eval_split)
            by_level.setdefault(record.level, {})[point] = float(record.metric)
    agreement = []
    for level in sorted(by_level):
        if level + 1 not in by_level:
            continue
        common = sorted(set(by_level[level]) & set(by_level[level + 1]))
        if len(common) < 4:
            continue
        low, high = ([by_level[at][point] for point in common] for at in (level, level + 1))
        tau, p_value = kendalltau(low, high)
        entry = {"levels": [level, level + 1], "n": len(common),
                 "kendall_tau": None if math.isnan(tau) else float(tau),
                 "p_value": None if math.isnan(p_value) else float(p_value)}
        if entry["kendall_tau"] is None:  # one level scored every point alike (e.g. all at the majority class)
            entry["tied_level"] = level if len(set(low)) == 1 else level + 1
        agreement.append(entry)
    return agreement


def recipe_baseline_names(recipe: Recipe) -> list[str]:
    return [spec.name for spec in recipe.baselines]


def export_front(
    out_dir: Path,
    recipe: Recipe,
    space: SearchSpace,
    model_path: str,
    *,
    front: list[TrialRecord],
    baselines: list[TrialRecord],
    finals: dict[str, list[TrialRecord]],
    trials: list[TrialRecord],
    last_level: list[TrialRecord],
    wall_time: float,
    oneshot_time_s: Optional[float] = None,
    strategy_time: Optional[dict[str, Any]] = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Write the outputs; returns the `front.json` document and the point dicts given to `write_front`."""
    from .plot import plot_front

    objectives = list(recipe.objectives)
    ok_trials = [r for r in trials if r.ok and r.kind != "final"]
    F_all = np.array([r.F for r in ok_trials]) if ok_trials else np.zeros((0, len(objectives)))
    ref = recipe.reference_point or default_reference_point(objectives, space.max_cost(), F_all)
    if not front:
        warnings.warn("No successful trial at the final fidelity: the front is empty (see journal.jsonl errors).")
    metric_name = next((r.metric_name for r in ok_trials), "metric")
    report_split = recipe.evaluation.report_split

    def with_protocol(record: TrialRecord, final_name: str) -> dict[str, Any]:
        final_report = report(finals[final_name], report_split, metric_name) if final_name in finals else None
        return {**record.to_dict(), "selection": selection(record), "report": final_report}

    points = [with_protocol(r, f"trial:{r.trial_id}") for r in front]
    searched = [r for r in trials if r.kind != "final"]
    full_runs = [r.wall_time_s for r in last_level if r.wall_time_s]  # one-shot scores (`retrain: false`) train nothing
    search_time = sum(r.wall_time_s for r in searched) + (oneshot_time_s or 0.0)
    # the issue's unit: one final-budget run of the LoRA r=8 baseline (twins' copies hold no time of their own)
    lora_runs = [r.wall_time_s for r in finals.get("lora_r8", []) if r.ok and r.wall_time_s]
    header = {
        "model": hub_id(recipe.model),
        "model_path": model_path,
        "task": recipe.task_name,
        "metric": metric_name,
        "objectives": [
            {"name": objective_label(n, metric_name), "direction": "max" if n == "metric" else "min"} for n in objectives
        ],
        "reference_point": [float(v) for v in ref],
        "hypervolume": hypervolume(np.array([r.F for r in front]) if front else np.zeros((0, 2)), ref),
        "search": {
            "algorithm": recipe.algorithm.name,
            "n_trials": len(searched),
            "n_failed": sum(not r.ok for r in searched),
            "seed": recipe.seed,
            "wall_time_s": wall_time,
            "trials_time_s": search_time,
            "oneshot_time_s": oneshot_time_s,
            "strategy_time": strategy_time,
            "final_time_s": sum(r.wall_time_s for r in trials if r.kind == "final"),
            "cost_full_runs": search_time / float(np.mean(full_runs)) if full_runs else None,
            "cost_lora_r8_runs": search_time / float(np.mean(lora_runs)) if lora_runs else None,
            "fidelity_levels": recipe.fidelity_levels,
            "eta": recipe.fidelity.eta,
            "fidelity_agreement": fidelity_agreement(searched),
            "evaluation": recipe.evaluation.model_dump(mode="json"),
            "final": recipe.final.model_dump(mode="json") if recipe.final is not None else None,
            "space": space.describe(),
            "recipe": recipe.raw,
        },
    }
    configs = [load_point_config(r.config) for r in front]
    for config in configs:
        config.base_model_name_or_path = hub_id(recipe.model)
    baseline_docs = [
        {"name": r.name, "metric": r.metric, "trainable_parameters": r.trainable_parameters, "trial_id": r.trial_id,
         "selection": selection(r), "report": with_protocol(r, r.name)["report"]}
        for r in baselines
    ]
    if not baselines:  # with a final stage the baselines are trained only there: no selection value
        for name in recipe_baseline_names(recipe):
            runs = [r for r in finals.get(name, []) if r.ok]
            if runs:
                baseline_docs.append({"name": name, "metric": None, "trainable_parameters": runs[0].trainable_parameters,
                                      "trial_id": runs[0].trial_id, "selection": None,
                                      "report": report(runs, report_split, metric_name)})
    document = write_front(out_dir, points, configs=configs, header=header, baselines=baseline_docs)
    plot_front(
        out_dir / "pareto.png", [r.to_dict() for r in searched], document["points"], baseline_docs,
        metric_name=metric_name,
        title=f"{Path(str(header['model'])).name} on {header['task']}: {len(searched)} trials, HV {header['hypervolume']:.4g}",
    )
    return document, points
