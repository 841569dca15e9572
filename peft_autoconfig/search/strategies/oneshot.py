"""`OneShotStrategy`: the base class of strategies that search by training once (`prune`, `s3pet`, `supernet`).

What they receive and return (`OneShotContext`, `OneShotResult`), the budgets and the oneshot.json cache live in
`search.oneshot`, which imports nothing from this package, so the one-shot methods' own packages (`search.prune`,
`search.s3pet`) can use them without an import circle through the strategy registry.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Optional

import numpy as np

from ..oneshot import OneShotContext, OneShotResult
from ..schema import RecipeModel
from .base import Point, RepairFn, Strategy


class OneShotStrategy(Strategy):
    """A strategy that trains once and returns configurations: implement `search`, not ask/tell.

    `budgeted` methods need the recipe's `budgets:`; `settings_model` (a `RecipeModel`) validates
    `algorithm.settings:`, whose errors then name `algorithm.settings.<field>`.
    """

    one_shot: ClassVar[bool] = True
    option_names: ClassVar[tuple[str, ...]] = ("settings",)
    budgeted: ClassVar[bool] = True
    settings_model: ClassVar[Optional[type[RecipeModel]]] = None

    def __init__(self, pop_size: int, repair: RepairFn, settings: Optional[RecipeModel] = None) -> None:
        super().__init__(pop_size, repair)
        self.settings = settings if settings is not None else (self.settings_model() if self.settings_model else None)

    @classmethod
    def parse_settings(cls, settings: Optional[dict[str, Any]]) -> Optional[RecipeModel]:
        """`algorithm.settings` validated by `settings_model` (errors name the dotted field)."""
        if cls.settings_model is None:
            if settings:
                raise ValueError(f"recipe field `algorithm.settings`: algorithm {cls.name!r} has no settings, got {sorted(settings)}")
            return None
        return cls.settings_model.parse(settings or {})

    def retrains_front(self) -> bool:
        """Whether the driver re-trains each returned configuration at the last fidelity level and chooses the front
        on those runs (default), or takes the method's own scores (`OneShotResult.score`) as the selection values
        and sends the front straight to the final stage (`supernet`'s `retrain: false`)."""
        return True

    def check(self, space: Any, budgets: list[int]) -> None:
        """Checks that need the space and the resolved budgets (`ValueError` naming the field); the driver calls it
        when the search is built, before the journal exists and before any training. Default: nothing."""

    @abstractmethod
    def search(self, context: OneShotContext) -> list[OneShotResult]:
        """Train once and return the configurations (one per budget when budgeted)."""

    # ask/tell does not apply: the driver calls `search` instead
    def _setup(self, seed: int) -> None:
        self.seed = seed

    def ask(self) -> list[Point]:
        raise TypeError(f"algorithm {self.name!r} is a one-shot strategy: the driver calls `search(context)`, not `ask`.")

    def tell(self, points: list[Point], F: np.ndarray) -> None:
        raise TypeError(f"algorithm {self.name!r} is a one-shot strategy: the driver calls `search(context)`, not `tell`.")


__all__ = ["OneShotStrategy"]
