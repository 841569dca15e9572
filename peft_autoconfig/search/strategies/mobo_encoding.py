"""The mixed search space as a unit cube for the `mobo` surrogate, and the discrete candidates it scores.

Encoding: every variable is one input in [0, 1]. A `Choice` with n options (module sizes, sorted ascending, and
LoRA target sets in the recipe's order) is its option index divided by n - 1 (ordinal: neighbouring sizes are
close, which is what a stationary kernel should see); an `Integer` in [lo, hi] (the backbone pruning's head and unit
counts) is the ordinal choice among lo..hi; a `Binary` layer flag is 0 or 1. Decoding a unit vector
(a Sobol point) takes the option whose equal-width bin holds the value. Points are always repaired by the
space after decoding, so every candidate is a valid, trainable point.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterator

import numpy as np
from pymoo.core.variable import Binary, Integer

Point = dict[str, Any]


class SpaceEncoding:
    """Ordinal/binary unit-cube encoding of a `SearchSpace`'s variables (see the module docstring)."""

    def __init__(self, variables: dict[str, Any], repair: Callable[[Point], Point], key: Callable[[Point], str]) -> None:
        self.names = list(variables)
        self.options: list[list[Any]] = [
            [False, True] if isinstance(v, Binary)
            else list(range(int(v.bounds[0]), int(v.bounds[1]) + 1)) if isinstance(v, Integer)
            else list(v.options) for v in variables.values()
        ]
        self._positions = [{option if not isinstance(option, list) else repr(option): i for i, option in
                            enumerate(options)} for options in self.options]
        self.repair = repair
        self.key = key
        self._scale = np.array([len(o) - 1 for o in self.options], dtype=float)

    @property
    def dims(self) -> int:
        return len(self.names)

    @property
    def size(self) -> int:
        """Number of raw (unrepaired) points: the product of the option counts."""
        return math.prod(len(o) for o in self.options)

    # -- points <-> vectors ---------------------------------------------------------------------------------------
    def indices(self, x: Point) -> tuple[int, ...]:
        return tuple(positions[x[name] if not isinstance(x[name], list) else repr(x[name])]
                     for name, positions in zip(self.names, self._positions))

    def encode(self, points: list[Point]) -> np.ndarray:
        """`len(points) x dims` array in [0, 1]."""
        if not points:
            return np.zeros((0, self.dims))
        return np.array([self.indices(x) for x in points], dtype=float) / self._scale

    def row_indices(self, row: np.ndarray) -> tuple[int, ...]:
        """The option indices of an encoded row (the inverse of `encode`)."""
        return tuple(int(i) for i in np.rint(row * self._scale))

    def point(self, indices: tuple[int, ...] | np.ndarray) -> Point:
        """The repaired point of option indices (one per variable)."""
        return self.repair({n: o[int(i)] for n, o, i in zip(self.names, self.options, indices)})

    def from_unit(self, u: np.ndarray) -> Point:
        """The repaired point whose equal-width bins hold the unit vector `u` (Sobol designs)."""
        sizes = self._scale + 1
        return self.point(np.minimum(np.floor(u * sizes), self._scale).astype(int))

    def check(self, x: Point, where: str) -> Point:
        """`x` as a point of this space; `ValueError` naming `where` if its variables or values do not fit."""
        missing = [n for n in self.names if n not in x]
        extra = [n for n in x if n not in self.names]
        if missing or extra:
            raise ValueError(f"{where}: a point of another search space (missing {missing}, unexpected {extra})")
        for name, options in zip(self.names, self.options):
            if x[name] not in options:
                raise ValueError(f"{where}: `{name}` = {x[name]!r} is not an option of this space {options}")
        return self.repair(x)

    # -- candidates -----------------------------------------------------------------------------------------------
    def enumerate(self) -> Iterator[Point]:
        """Every distinct repaired point, in a fixed order (for small spaces)."""
        seen: set[str] = set()
        for indices in itertools.product(*(range(len(o)) for o in self.options)):
            x = self.point(indices)
            if self.key(x) not in seen:
                seen.add(self.key(x))
                yield x

    def random(self, rng: np.random.Generator, n: int) -> list[Point]:
        """`n` uniform random repaired points (may repeat)."""
        columns = [rng.integers(0, len(o), size=n) for o in self.options]
        return [self.point(row) for row in zip(*columns)]

    def neighbours(self, x: Point) -> list[Point]:
        """The repaired points one step away: a flipped layer flag, the next smaller/larger option of a choice, or
        for long integer ranges (more than 32 values) also a sixteenth of the range down and up."""
        out = []
        base = self.indices(x)
        for j, options in enumerate(self.options):
            far = len(options) // 16 if len(options) > 32 else 0
            for step in ((-far, -1, 1, far) if far else (-1, 1)):
                if 0 <= base[j] + step < len(options):
                    out.append(self.point(base[:j] + (base[j] + step,) + base[j + 1 :]))
        return out
