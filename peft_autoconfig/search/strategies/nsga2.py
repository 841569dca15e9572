"""NSGA-II on the mixed space (pymoo `MixedVariableGA` with rank-and-crowding survival)."""

from __future__ import annotations

from .base import PymooStrategy, SeededSampling, SpaceRepair, register_strategy


@register_strategy
class NSGA2Strategy(PymooStrategy):
    """NSGA-II on mixed variables: `MixedVariableGA` with rank-and-crowding survival."""

    name = "nsga2"

    def make_algorithm(self):
        from pymoo.core.mixed import MixedVariableDuplicateElimination, MixedVariableGA, MixedVariableMating
        from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
        from pymoo.util.display.multi import MultiObjectiveOutput

        repair = SpaceRepair(self.repair)
        return MixedVariableGA(
            pop_size=self.pop_size,
            n_offsprings=self.pop_size,
            sampling=SeededSampling(self.initial_points),
            mating=MixedVariableMating(eliminate_duplicates=MixedVariableDuplicateElimination(), repair=repair),
            eliminate_duplicates=MixedVariableDuplicateElimination(),
            survival=RankAndCrowding(),
            output=MultiObjectiveOutput(),
            repair=repair,
        )
