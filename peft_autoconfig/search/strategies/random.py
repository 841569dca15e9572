"""Random search: the baseline every other strategy must beat at the same trial budget."""

from __future__ import annotations

import numpy as np

from .base import Point, Strategy, register_strategy


@register_strategy
class RandomStrategy(Strategy):
    """Random search baseline: uniform samples of the mixed space (pymoo's `MixedVariableSampling`), no repeats."""

    name = "random"
    max_resample = 50

    def _setup(self, seed: int) -> None:
        from pymoo.core.mixed import MixedVariableSampling

        self.sampling = MixedVariableSampling()
        self.random_state = np.random.default_rng(seed)
        self.seen: set[str] = set()

    def _key(self, x: Point) -> str:
        return repr(sorted(x.items()))

    def ask(self) -> list[Point]:
        batch: list[Point] = []
        for x in self.initial_points:  # the recipe's `points_to_evaluate`, in the first batch only
            if self._key(x) not in self.seen:
                self.seen.add(self._key(x))
                batch.append(x)
        self.initial_points = []
        for _ in range(self.max_resample):
            if len(batch) == self.pop_size:
                break
            samples = self.sampling(self.problem, self.pop_size - len(batch), random_state=self.random_state).get("X")
            for x in samples:
                x = self.repair(x)
                if self._key(x) not in self.seen:
                    self.seen.add(self._key(x))
                    batch.append(x)
            if len(batch) == self.pop_size:
                break
        return batch

    def tell(self, points: list[Point], F: np.ndarray) -> None:
        """Random search ignores the objectives."""
