"""Stage 1: fine-tune the model as a weight-sharing super-network with the sandwich rule (Klein et al., after
Yu et al.'s slimmable networks).

The sandwich rule itself (largest on the labels, smallest and random sub-networks distilled in place, one backward
pass) is `training.sandwich.SandwichTrainer`, shared with the super-PET. This module only says what a backbone
sub-network is: `BackboneSupernet` builds the head/unit/layer masks (`SuperNetwork`) and the space of
sub-networks (`BackboneSpace`) the trainer draws its students from. Evaluation runs the full model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..training.sandwich import SandwichTrainer, distillation_loss, sandwich_losses, sandwich_networks
from .masking import SuperNetwork
from .space import BackboneSpace, Dims


@dataclass(frozen=True)
class BackboneSupernet:
    """`SandwichTrainer(supernet=BackboneSupernet(...))`: the backbone's switch and space (the recipe's `space:`)."""

    granularity: str = "medium"
    min_layers: int = 1
    min_heads: int = 1
    min_units: int = 1

    def __call__(self, model: torch.nn.Module) -> tuple[SuperNetwork, BackboneSpace]:
        supernet = SuperNetwork(model)
        space = BackboneSpace(Dims.from_config(supernet.model.config), self.granularity, self.min_layers,
                              self.min_heads, self.min_units)
        return supernet, space


__all__ = ["BackboneSupernet", "SandwichTrainer", "distillation_loss", "sandwich_losses", "sandwich_networks"]
