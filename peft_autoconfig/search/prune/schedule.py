"""What to keep at each pruning step: the geometric schedule of parameter targets and the greedy budgeted selection.

Pure functions of the unit groups and their importance scores (no training), so they are tested on their own.
"""

from __future__ import annotations

import math

import torch

from ...tuners.units import GroupKey, UnitGroup


def select_units(
    groups: dict[GroupKey, UnitGroup], scores: dict[GroupKey, torch.Tensor], fixed: dict[GroupKey, float], budget: int
) -> dict[GroupKey, torch.Tensor]:
    """The keep masks after pruning the current masks of `groups` down to at most `budget` parameters.

    Greedy on importance per parameter: candidates are every kept unit (`score / unit_cost`) and every block with kept
    units (`(sum of its kept units' scores + its fixed part's score) / its cost`), removed from the least important
    until the cost fits; a block's fixed parameters go with its last unit. A whole block is removed only while the
    excess is at least its size (so the result does not undershoot the budget by a block), else unit by unit. The
    last unit of the whole model is never removed; if it alone is over the budget, the single most important unit
    that fits is kept instead. Raises `ValueError` when no unit fits the budget.
    """
    alive = {key: group.alive.detach().cpu().clone() for key, group in groups.items()}
    counts = {key: int(mask.sum()) for key, mask in alive.items()}
    cost = sum(groups[key].cost(n) for key, n in counts.items())
    if cost <= budget:
        return alive
    candidates: list[tuple[float, int, GroupKey, int]] = []  # (ratio, order, group, unit index or -1 = block)
    for order, (key, group) in enumerate(sorted(groups.items())):
        kept = alive[key].nonzero().flatten().tolist()
        if not kept:
            continue
        for i in kept:
            candidates.append((float(scores[key][i]) / group.unit_cost, order, key, i))
        block_score = float(scores[key][alive[key]].sum()) + fixed[key]
        candidates.append((block_score / group.cost(len(kept)), order, key, -1))
    candidates.sort(key=lambda c: (c[0], c[1], c[3]))
    total_units = sum(counts.values())
    for _, _, key, index in candidates:
        if cost <= budget:
            break
        group = groups[key]
        removing = counts[key] if index == -1 else int(bool(alive[key][index]))
        if removing == 0 or removing >= total_units:
            continue  # already gone, or it would leave no unit at all
        before = group.cost(counts[key])
        if index == -1 and cost - before < budget:
            continue  # a whole block only while the excess is at least its size; its units can go one by one
        if index == -1:
            alive[key][:] = False
        else:
            alive[key][index] = False
        counts[key] -= removing
        total_units -= removing
        cost -= before - group.cost(counts[key])
    if cost > budget:
        return _best_single_unit(groups, scores, alive, budget)
    return alive


def _best_single_unit(
    groups: dict[GroupKey, UnitGroup], scores: dict[GroupKey, torch.Tensor], alive: dict[GroupKey, torch.Tensor],
    budget: int,
) -> dict[GroupKey, torch.Tensor]:
    fitting = [
        (float(scores[key][i]), key, i)
        for key, group in groups.items() if group.cost(1) <= budget
        for i in group.alive.detach().cpu().nonzero().flatten().tolist()
    ]
    if not fitting:
        cheapest = min(group.cost(1) for group in groups.values())
        raise ValueError(
            f"budget {budget:,} is below the smallest structure left to keep ({cheapest:,} parameters: one unit of "
            "one block); give a larger budget."
        )
    _, key, i = max(fitting, key=lambda f: (f[0], -f[1][0]))
    kept = {k: torch.zeros_like(mask) for k, mask in alive.items()}
    kept[key][i] = True
    return kept


def pruning_targets(current: int, budget: int, keep_fraction: float) -> list[int]:
    """The parameter targets of the steps from `current` down to `budget`: geometric by `keep_fraction`, then the
    budget itself."""
    targets = []
    while current > budget:
        current = max(budget, int(math.floor(current * keep_fraction)))
        targets.append(current)
    return targets


def expected_steps(maximum: int, budgets: list[int], keep_fraction: float) -> int:
    """The number of pruning steps from `maximum` through every budget (the progress bar's total)."""
    total, current = 0, maximum
    for budget in sorted(budgets, reverse=True):
        targets = pruning_targets(current, budget, keep_fraction)
        total += len(targets)
        current = targets[-1] if targets else current
    return total


def check_budgets(budgets: list[int], maximum: int) -> None:
    """`ValueError` for a budget above the maximal configuration (the recipe check catches it before too)."""
    above = [b for b in budgets if b > maximum]
    if above:
        raise ValueError(
            f"budgets {above} are above the maximal configuration of the space ({maximum:,} trainable parameters); "
            f"allowed: 1 .. {maximum:,}."
        )
