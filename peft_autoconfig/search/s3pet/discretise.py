"""From keep probabilities to one standard `MixedPetConfig` under a budget (S3Delta's `hard_forward_structure`).

Positions are visited by decreasing probability (ties: position order) and kept when the configuration with them
still costs at most the budget; a position that does not fit is skipped and the next one tried. The cost is the
analytic count of the expressible configuration (`SuperConfiguration.cost`), so LoRA positions implied by the shared
target list are paid for. For fixed probabilities the result's count never decreases as the budget grows: at the
first position where two budgets decide differently, the larger budget keeps it and is then already above the
smaller budget, and counts only grow as positions are added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...tuners.mixed import MixedPetConfig
from .positions import SuperConfiguration


@dataclass
class Discretisation:
    budget: int
    chosen: list[int]
    """Positions chosen by the greedy pass, in the order chosen."""
    kept: list[int]
    """Positions present in `config` (the chosen ones and the LoRA positions they imply)."""
    config: MixedPetConfig
    trainable_parameters: int

    def details(self, superconfig: SuperConfiguration) -> dict[str, Any]:
        names = [p.name for p in superconfig.positions]
        return {
            "chosen": [names[i] for i in self.chosen],
            "kept": [names[i] for i in self.kept],
            "implied": [names[i] for i in self.kept if i not in self.chosen],
        }


def discretise(superconfig: SuperConfiguration, probabilities: Sequence[float] | np.ndarray, budget: int) -> Discretisation:
    """The greedy structure under `budget` (see the module docstring); `ValueError` if not even one position fits."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != (len(superconfig),):
        raise ValueError(f"need one probability per position ({len(superconfig)}), got shape {p.shape}.")
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    chosen: list[int] = []
    cost = 0
    for i in order:
        candidate = chosen + [i]
        candidate_cost = superconfig.cost(candidate)
        if candidate_cost <= budget:
            chosen, cost = candidate, candidate_cost
    if not chosen:
        raise ValueError(
            f"budget {budget:,} is below the smallest candidate block ({superconfig.smallest_block():,} parameters): "
            "nothing can be kept."
        )
    config = superconfig.config_for(chosen)
    return Discretisation(budget, chosen, superconfig.kept(config), config, cost)
