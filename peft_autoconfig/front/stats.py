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
