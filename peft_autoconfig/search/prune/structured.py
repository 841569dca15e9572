"""Structured pruning: whole units (LoRA ranks, adapter units, prefix tokens, bias blocks) masked by hooks
(`tuners/units.UnitMasks`, no weight copied); each budget's configuration has per-layer sizes."""

from __future__ import annotations

from typing import Any

from ...tuners.mixed import MixedPetConfig
from ...tuners.units import UnitImportance, UnitMasks
from .configs import config_from_masks
from .schedule import select_units


class StructuredPruner:
    """Units masked by hooks (`UnitMasks`); the configurations have per-layer sizes."""

    def __init__(self, model: Any, shared: dict[str, Any], model_config: Any) -> None:
        self.masks = UnitMasks(model)
        self.importance = UnitImportance(self.masks)
        self.shared, self.model_config = shared, model_config

    def check_budget(self, smallest_budget: int) -> None:
        smallest = min(group.cost(1) for group in self.masks.groups.values())
        if smallest_budget < smallest:
            raise ValueError(
                f"budget {smallest_budget:,} is below the smallest structure of the space ({smallest:,} parameters: "
                "one unit of one block); give a larger budget."
            )

    def cost(self) -> int:
        return self.masks.cost()

    def prune_to(self, target: int) -> None:
        for key, alive in select_units(self.masks.groups, self.importance.scores, self.importance.fixed, target).items():
            self.masks.set_alive(key, alive)

    def trace(self) -> dict[str, Any]:
        return {"sizes": self.masks.sizes()}

    def snapshot(self, budget: int) -> tuple[MixedPetConfig, dict[str, Any]]:
        details = {
            "sizes": {f: {str(k): v for k, v in s.items()} for f, s in self.masks.sizes().items()},
            "kept_fraction": {
                f"{layer}.{kind}": g.num_alive / g.size for (layer, kind), g in sorted(self.masks.groups.items())
            },
            "block_importance": block_importance(self.masks, self.importance),
        }
        return config_from_masks(self.masks, self.shared, self.model_config), details

    def close(self) -> None:
        self.masks.remove()


def block_importance(masks: UnitMasks, importance: UnitImportance) -> dict[str, float]:
    """Accumulated importance of the kept units per `<layer>.<kind>` (the latest scoring window), for diagnostics."""
    return {
        f"{layer}.{kind}": float(importance.scores[(layer, kind)][group.alive.cpu()].sum())
        for (layer, kind), group in sorted(masks.groups.items()) if group.num_alive
    }
