"""Pareto fronts, hypervolume, successive-halving selection and the front export (`write_front`, over
`peft_autoconfig.front`, which owns front.json).

All objective vectors here are in pymoo's minimisation space: a maximised metric enters negated.

Hypervolume reference point (saved in `front.json`): unless the recipe gives `reference_point`, it is 0 for the
negated metric (a metric of 0 adds nothing), 1.1 x the parameter count of the largest point of the space for
`trainable_parameters`, and 1.1 x the largest value seen for measured costs (`wall_time_s`, `peak_memory_bytes`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from ..front import Front, FrontPoint, Objective, config_to_dict


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of `F` (minimisation), in ascending order."""
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    return np.sort(NonDominatedSorting().do(F, only_non_dominated_front=True))


def select_for_promotion(F: np.ndarray, k: int) -> list[int]:
    """The `k` best rows by non-dominated rank, then crowding distance (ties: lower index first).

    This is NSGA-II's survival, made deterministic; with successive halving `k = ceil(n / eta)`, so the current
    front is promoted first (its most spread part when it has more than `k` points), then the next ranks.
    """
    F = np.asarray(F, dtype=float)
    chosen: list[int] = []
    for front in NonDominatedSorting().do(F):
        front = sorted(int(i) for i in front)
        if len(chosen) + len(front) <= k:
            chosen.extend(front)
            continue
        crowding = calc_crowding_distance(F[front]) if len(front) > 2 else np.full(len(front), np.inf)
        order = sorted(range(len(front)), key=lambda j: (-crowding[j], front[j]))
        chosen.extend(front[j] for j in order[: k - len(chosen)])
        break
    return sorted(chosen)


def promotion_size(n: int, eta: int) -> int:
    return max(1, math.ceil(n / eta)) if n else 0


def hypervolume(F: np.ndarray, reference_point: Sequence[float]) -> float:
    """pymoo's hypervolume of `F` against `reference_point` (points beyond it contribute nothing)."""
    F = np.asarray(F, dtype=float)
    ref = np.asarray(reference_point, dtype=float)
    if len(F) == 0:
        return 0.0
    inside = np.all(F < ref, axis=1)
    if not inside.any():
        return 0.0
    return float(HV(ref_point=ref)(F[inside]))


def default_reference_point(objectives: Sequence[str], max_parameters: int, F_all: np.ndarray) -> list[float]:
    """See the module docstring."""
    F_all = np.asarray(F_all, dtype=float).reshape(-1, len(objectives))
    ref = []
    for j, name in enumerate(objectives):
        if name == "metric":
            ref.append(0.0)
        elif name == "trainable_parameters":
            ref.append(1.1 * max_parameters)
        else:
            finite = F_all[np.isfinite(F_all[:, j]), j] if len(F_all) else np.zeros(0)
            ref.append(1.1 * float(finite.max()) if len(finite) else 1.0)
    return ref


def objective_label(name: str, metric_name: str) -> str:
    return metric_name if name == "metric" else name


def write_front(
    out_dir: str | Path,
    front: list[dict[str, Any]],
    *,
    configs: list[Any],
    header: dict[str, Any],
    baselines: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write `front.json` and one PEFT config folder per point (`front/p00`, ...) through `Front.save`.

    A thin adapter from journal records to `peft_autoconfig.front`: `front` holds the records of the front points
    (sorted as they should be named), `configs` their PEFT configs, `header` the document's top fields (model,
    model_path, task, metric, objectives, reference point, hypervolume, search) and `baselines` dicts with at
    least name, metric and trainable_parameters. A record or baseline may carry `selection`/`report`/`config`
    dicts in the front.json form; without `selection`, its `metric` is the selection value on the recipe's
    evaluation split. Returns the written document.
    """
    metric = header["metric"]
    recipe = (header.get("search") or {}).get("recipe") or {}
    split = str(((recipe.get("training") or {}) if isinstance(recipe.get("training"), dict) else {}).get("eval_split")
                or "validation")
    width = max(2, len(str(len(front) - 1)))

    def point(record: dict[str, Any], name: str, kind: str, config: dict[str, Any] | None) -> FrontPoint:
        selection = record["selection"] if "selection" in record else {"split": split, "metric": metric, "value": record["metric"]}
        return FrontPoint.from_dict({
            **{k: record[k] for k in ("trial_id", "objectives", "fidelity", "x", "metrics", "report") if k in record},
            "name": name, "kind": kind, "trainable_parameters": record["trainable_parameters"], "config": config,
            "selection": selection,
        }, f"{kind} {name!r}")

    document = Front(
        model=header["model"], task=header["task"], metric=metric,
        objectives=[Objective(o["name"], o["direction"]) for o in header["objectives"]],
        points=[point(r, f"p{i:0{width}d}", "search", config_to_dict(c)) for i, (r, c) in enumerate(zip(front, configs))],
        baselines=[point(b, b["name"], "baseline", b.get("config")) for b in baselines or []],
        reference_point=header.get("reference_point"), hypervolume=header.get("hypervolume"),
        search=dict(header.get("search") or {}), model_path=header.get("model_path"),
    )
    return document.save(out_dir)
