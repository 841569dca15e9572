"""The setup/ask/tell `Strategy` interface, the pymoo adapter and the registry of strategy names.

The driver (`search.driver`) asks for a batch of points, evaluates them however it likes (sequentially, on Dask,
from the journal) and tells the objectives back in the order asked. A strategy's sequence of asked points depends
only on its seed and on the objectives it was told, never on timing or on the number of workers, which is what
makes resuming (replaying the journal) and parallel evaluation reproducible.

A new strategy (surrogate-assisted, differentiable, pruning, weight sharing) is one module in this package: a
`Strategy` subclass decorated with `@register_strategy`, imported by the package's `__init__`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.problems.static import StaticProblem
from pymoo.core.termination import NoTermination

Point = dict[str, Any]
RepairFn = Callable[[Point], Point]


class SpaceRepair(Repair):
    """pymoo `Repair` calling `SearchSpace.repair` on every point (keeps offspring valid and JSON-plain)."""

    def __init__(self, repair: RepairFn) -> None:
        super().__init__()
        self.repair_point = repair  # not `repair`: pymoo's `Operator` uses that attribute itself

    def _do(self, problem: Problem, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        out = np.empty(len(X), dtype=object)
        for i, x in enumerate(X):
            out[i] = self.repair_point(x)
        return out


class SeededSampling(Sampling):
    """pymoo sampling whose first samples are given points (syne-tune's `points_to_evaluate`), the rest drawn by
    `MixedVariableSampling`: a GA's initial population that contains the hand-designed configurations."""

    def __init__(self, points: list[Point]) -> None:
        super().__init__()
        self.points = points

    def _do(self, problem: Problem, n_samples: int, random_state: Any = None, **kwargs: Any) -> list[Point]:
        from pymoo.core.mixed import MixedVariableSampling

        given = self.points[:n_samples]
        drawn = MixedVariableSampling()._do(problem, n_samples - len(given), random_state=random_state) if n_samples > len(given) else []
        return [dict(x) for x in given] + list(drawn)


class Strategy(ABC):
    """A search strategy: `setup` once, then `ask` a batch and `tell` its objectives (minimised), repeatedly."""

    name: ClassVar[str]
    one_shot: ClassVar[bool] = False
    """True for `search.strategies.oneshot.OneShotStrategy`: trained once through `search(context)`, not driven by ask/tell."""
    option_names: ClassVar[tuple[str, ...]] = ()
    """The strategy's own `algorithm.*` recipe fields, passed to `__init__` as keyword arguments."""

    def __init__(self, pop_size: int, repair: RepairFn) -> None:
        self.pop_size = pop_size
        self.repair = repair
        self.problem: Problem | None = None
        self.initial_points: list[Point] = []

    @classmethod
    def check_available(cls, **options: Any) -> None:
        """Recipe check: `ValueError` naming the field when the strategy cannot run here (a missing extra)."""

    def setup(self, problem: Problem, seed: int, initial_points: list[Point] | None = None) -> None:
        """`initial_points` (the recipe's `algorithm.points_to_evaluate`, at most `pop_size`) come first in the
        first batch, before the strategy's own initial design, and are told like any other point."""
        self.problem = problem
        if initial_points and len(initial_points) > self.pop_size:
            raise ValueError(
                f"recipe field `algorithm.points_to_evaluate`: {len(initial_points)} points, at most `pop_size` "
                f"({self.pop_size}) allowed"
            )
        self.initial_points = [self.repair(dict(x)) for x in initial_points or []]
        self._setup(seed)

    @abstractmethod
    def _setup(self, seed: int) -> None: ...

    @abstractmethod
    def ask(self) -> list[Point]:
        """The next batch of (repaired) points; an empty list when the strategy has nothing more to propose."""

    @abstractmethod
    def tell(self, points: list[Point], F: np.ndarray) -> None:
        """Objectives `F` (shape `len(points) x n_obj`, minimised) of the points of the last `ask`, in that order.

        `points` may be a prefix of the batch when the trial budget ends inside it.
        """

    def diagnostics(self) -> list[dict[str, Any]]:
        """Per-`ask` facts of the strategy's own work (MOBO: surrogate fit and acquisition seconds), in ask order;
        the driver adds them to its timing of each batch in front.json (`search.strategy_time`)."""
        return []


class PymooStrategy(Strategy):
    """Adapter for any pymoo `Algorithm` driven through `setup/ask/tell` (see STYLE.md section 4)."""

    def __init__(self, pop_size: int, repair: RepairFn) -> None:
        super().__init__(pop_size, repair)
        self.algorithm = None
        self._asked: Population | None = None

    @abstractmethod
    def make_algorithm(self):
        """The pymoo algorithm, with `SpaceRepair(self.repair)` wired into sampling and mating."""

    def _setup(self, seed: int) -> None:
        self.algorithm = self.make_algorithm()
        self.algorithm.setup(self.problem, seed=seed, termination=NoTermination(), verbose=False)

    def ask(self) -> list[Point]:
        self._asked = self.algorithm.ask()
        return [self.repair(x) for x in self._asked.get("X")]

    def tell(self, points: list[Point], F: np.ndarray) -> None:
        if self._asked is None:
            raise RuntimeError("`tell` called before `ask`.")
        pop = self._asked[: len(points)]
        # a vectorised twin of the problem, so StaticProblem hands over the whole batch's F at once
        batch_problem = Problem(vars=self.problem.vars, n_obj=self.problem.n_obj, n_ieq_constr=self.problem.n_ieq_constr)
        static = StaticProblem(batch_problem, F=np.asarray(F, dtype=float))
        Evaluator().eval(static, pop)
        self.algorithm.tell(infills=pop)
        self._asked = None


STRATEGIES: dict[str, type[Strategy]] = {}
"""Strategy name (the recipe's `algorithm.name`) -> class; filled by `register_strategy`."""


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make `cls` available as `algorithm.name: <cls.name>` (one module per strategy)."""
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ValueError(f"search strategy {cls.name!r} is already registered by {STRATEGIES[cls.name].__module__}.")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, pop_size: int, repair: RepairFn, **options: Any) -> Strategy:
    """The strategy `name`; `options` are its own recipe fields (`Strategy.option_names`)."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown search algorithm {name!r}; allowed: {sorted(STRATEGIES)}.")
    return STRATEGIES[name](pop_size=pop_size, repair=repair, **options)


def check_algorithm(name: str, ask_tell: bool = False) -> str:
    """A recipe's `algorithm` name, checked against the registry (the PET search and backbone pruning share it).

    `ask_tell=True` (backbone pruning, the super-PET's inner search) admits only strategies driven by ask/tell, not
    the one-shot ones (`search.strategies.oneshot.OneShotStrategy`), which train PET modules themselves."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown algorithm {name!r}; allowed: {sorted(STRATEGIES)}")
    if ask_tell and STRATEGIES[name].one_shot:
        asking = sorted(n for n, s in STRATEGIES.items() if not s.one_shot)
        raise ValueError(f"must be an ask/tell strategy, one of {asking}; {name!r} is a one-shot strategy")
    return name
