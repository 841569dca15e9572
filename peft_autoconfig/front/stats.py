"""Uncertainty of a measured metric, so every number in front.json and `show` comes with its standard error."""

from __future__ import annotations

import math
from typing import Sequence

ACCURACY_LIKE = frozenset({"accuracy", "acc", "exact_match"})


def binomial_standard_error(accuracy: float, n: int) -> float:
    """sqrt(p (1 - p) / n): the standard error of an accuracy measured on `n` independent examples."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive int (the number of evaluated examples), got {n!r}.")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"`accuracy` must be in [0, 1], got {accuracy!r}.")
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


def metric_standard_error(metric: str, value: float, n: int | None) -> float | None:
    """The binomial standard error for accuracy-like metrics with a known `n`; None where it does not apply."""
    if n is None or metric.lower() not in ACCURACY_LIKE or not 0.0 <= value <= 1.0:
        return None
    return binomial_standard_error(value, n)


def mean_and_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value) of per-seed results."""
    if not values:
        raise ValueError("`seeds` must hold at least one value.")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def describe_fidelity_agreement(agreement: Sequence[dict]) -> str | None:
    """'level 0 -> 1: Kendall tau 0.40 (p = 0.18) over 7 promoted points' for each pair of levels in a front's
    `search.fidelity_agreement` (`search.export.fidelity_agreement`); None when there is none."""
    parts = []
    for entry in agreement:
        low, high = entry["levels"]
        tau, p_value = entry.get("kendall_tau"), entry.get("p_value")
        if tau is None:
            tied = entry.get("tied_level")
            value = "undefined" + (f" (level {tied} scored them all alike)" if tied is not None else "")
        else:
            value = f"{tau:.2f}" + (f" (p = {p_value:.2g})" if p_value is not None else "")
        parts.append(f"level {low} -> {high}: Kendall tau {value} over {entry['n']} promoted points")
    return "; ".join(parts) or None
