"""`algorithm.settings` of `algorithm.name: prune` (Lawton et al., 2023)."""

from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field

from ..schema import RecipeModel


class PruneSettings(RecipeModel):
    """`algorithm.settings` of `prune`.

    Args:
        keep_fraction: each pruning step keeps at least this share of the current trainable parameters (0.5 halves
            the architecture per step; smaller = fewer, coarser steps).
        retrain_steps: optimiser steps of re-training after each pruning step (they also accumulate the next step's
            importance); None = a quarter of the one-shot stage's steps, at least 1.
        evaluate: score each budget's pruned model on the selection split (`OneShotResult.score`).
        unstructured: prune single weights instead of structures: importance per weight, the maximal structure kept,
            a bool mask per PET weight saved to a safetensors file that the configuration names (`weight_masks`);
            the parameter count is then the number of non-zero weights.
    """

    where: ClassVar[tuple[str, ...]] = ("algorithm", "settings")

    keep_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    retrain_steps: Optional[int] = Field(None, ge=1, strict=True)
    evaluate: bool = True
    unstructured: bool = False
