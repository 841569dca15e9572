"""The shifted global sigmoid: keep probabilities p_i = sigmoid((alpha_i - b) / beta) whose expected parameter
count sum(p_i * n_i) equals the budget.

The shift b is solved numerically outside autograd, as in S3Delta (`calculate_bia_for_shifting`, there with
`scipy.optimize.fsolve`; here by bisection, which cannot fail to converge: the expected count is strictly decreasing
in b). Gradients reach alpha through the sigmoid only, b being a constant of each step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EPS = 1e-7
"""p is kept inside [EPS, 1 - EPS] in value (not in gradient), as S3Delta does, so logits stay finite."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def expected_count(alpha: np.ndarray, counts: np.ndarray, shift: float, temperature: float) -> float:
    """sum(n_i * sigmoid((alpha_i - shift) / temperature)), in float64."""
    return float(np.sum(counts * _sigmoid((alpha - shift) / temperature)))


def solve_shift(alpha: np.ndarray | torch.Tensor, counts: np.ndarray | list, budget: float, temperature: float,
                rtol: float = 1e-12, max_iter: int = 400) -> float:
    """The shift b with `expected_count(alpha, counts, b, temperature) == budget`.

    `budget` must be in (0, sum(counts)]; at sum(counts) every block is kept (b = -inf).
    """
    alpha = np.asarray(alpha.detach().cpu() if isinstance(alpha, torch.Tensor) else alpha, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if alpha.shape != counts.shape or alpha.ndim != 1 or not len(alpha):
        raise ValueError(f"`alpha` and `counts` must be 1-d and of one length, got {alpha.shape} and {counts.shape}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    total = float(counts.sum())
    if not 0 < budget <= total:
        raise ValueError(f"`budget` must be in (0, {total:g}] (the sum of the counts), got {budget}.")
    if budget >= total:
        return -math.inf
    lo, hi, step = float(alpha.min()), float(alpha.max()), float(temperature)
    while expected_count(alpha, counts, lo, temperature) < budget:  # lower b keeps more
        lo -= step
        step *= 2
    step = float(temperature)
    while expected_count(alpha, counts, hi, temperature) > budget:
        hi += step
        step *= 2
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        if expected_count(alpha, counts, mid, temperature) > budget:
            lo = mid
        else:
            hi = mid
        if hi - lo <= rtol * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def keep_probabilities(alpha: torch.Tensor, counts: np.ndarray | list, budget: float, temperature: float,
                       shift_detach: bool = True) -> tuple[torch.Tensor, float]:
    """(p, b): the keep probabilities (differentiable in alpha) and the shift used.

    With `shift_detach`, p is rescaled by sum(p) / sum(p).detach() (S3Delta's `--shift_detach`): the same values,
    but alpha's gradient now also pushes the other probabilities so that their sum stays put, as the shift would.
    """
    shift = solve_shift(alpha, counts, budget, temperature)
    p = torch.sigmoid((alpha - shift) / temperature)
    p = p + (p.clamp(EPS, 1 - EPS) - p).detach()
    if shift_detach:
        total = p.sum()
        p = p / total * total.detach()
    return p, shift
