"""S3PET: differentiable budgeted structure search (Hu et al., 2022; reference code thunlp/S3Delta).

Modules, one job each: `settings` (the recipe's `algorithm.settings`), `positions` (the super-configuration and its
analytic counts), `shift` (the shifted global sigmoid), `gates` (scaling block outputs by gate values without
rewriting layers), `trainer` (bi-level first-order training on `transformers.Trainer`), `discretise` (the structure
under a budget), `run` (one search through the project's runner) and `plot`. The strategy (`algorithm.name: s3pet`) is
`search.strategies.s3pet`.
"""

from .discretise import Discretisation, discretise
from .gates import GateController, GateHandles, PositionGate, install_gates
from .positions import Position, SuperConfiguration
from .settings import S3PETSettings
from .shift import expected_count, keep_probabilities, solve_shift

__all__ = [
    "Discretisation", "GateController", "GateHandles", "Position", "PositionGate", "S3PETSettings",
    "SuperConfiguration", "discretise", "expected_count", "install_gates", "keep_probabilities", "solve_shift",
]
