"""Search strategies, one module each, behind the setup/ask/tell interface of `base.Strategy`.

Importing this package registers the built-in strategies; a new one is a module here decorated with
`@register_strategy` and imported below.
"""

from . import mobo, nsga2, random, s3pet  # noqa: F401  (registration)
from .base import STRATEGIES, PymooStrategy, SpaceRepair, Strategy, make_strategy, register_strategy
from .nsga2 import NSGA2Strategy
from .random import RandomStrategy

__all__ = [
    "NSGA2Strategy", "PymooStrategy", "RandomStrategy", "STRATEGIES", "SpaceRepair", "Strategy", "make_strategy",
    "register_strategy",
]
