"""The search as a pymoo problem: the space's mixed variables and minimised objectives.

The driver evaluates points itself (ask/tell, so it can journal and resume), but the same problem also works with
plain pymoo (`minimize(problem, algorithm)`, optionally with `elementwise_runner=DaskParallelization(client)`):
`_evaluate` calls the injected `objective(x) -> list[float]`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from pymoo.core.problem import ElementwiseProblem

from .space import SearchSpace


class SearchProblem(ElementwiseProblem):
    """pymoo problem over `space.variables` with `len(objectives)` minimised objectives."""

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[str],
        objective: Callable[[dict[str, Any]], Sequence[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(vars=space.variables, n_obj=len(objectives), **kwargs)
        self.space = space
        self.objective_names = list(objectives)
        self.objective = objective

    def _evaluate(self, x: dict[str, Any], out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if self.objective is None:
            raise RuntimeError("SearchProblem has no `objective`; the search driver evaluates points via ask/tell.")
        out["F"] = list(self.objective(self.space.repair(x)))
