"""Search strategies, one module each, behind the setup/ask/tell interface of `base.Strategy`.

Importing this package registers every built-in strategy; a new one is a module here decorated with
`@register_strategy` and imported below. `base` comes first: the one-shot strategies (`prune`, `s3pet`, `supernet`)
subclass `search.strategies.oneshot.OneShotStrategy`, which imports `base`.
"""

from .base import STRATEGIES, PymooStrategy, SpaceRepair, Strategy, make_strategy, register_strategy
from . import mobo, nsga2, random  # noqa: F401,E402  (registration: ask/tell)
from . import prune, s3pet, supernet  # noqa: F401,E402  (registration: one-shot)
from .nsga2 import NSGA2Strategy
from .random import RandomStrategy

__all__ = [
    "NSGA2Strategy", "PymooStrategy", "RandomStrategy", "STRATEGIES", "SpaceRepair", "Strategy", "make_strategy",
    "register_strategy",
]
