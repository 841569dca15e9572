"""Search strategies, one module each, behind the setup/ask/tell interface of `base.Strategy`.

Importing this package registers the built-in ask/tell strategies; a new one is a module here decorated with
`@register_strategy` and imported below. One-shot strategies (`prune`, `s3pet`, `supernet`) subclass `search.oneshot.OneShotStrategy`,
which imports this package's `base`, so importing them here would close an import circle: `search/__init__.py`
imports them instead, which every import of a `peft_autoconfig.search` module runs first.
"""

from . import mobo, nsga2, random  # noqa: F401  (registration)
from .base import STRATEGIES, PymooStrategy, SpaceRepair, Strategy, make_strategy, register_strategy
from .nsga2 import NSGA2Strategy
from .random import RandomStrategy

__all__ = [
    "NSGA2Strategy", "PymooStrategy", "RandomStrategy", "STRATEGIES", "SpaceRepair", "Strategy", "make_strategy",
    "register_strategy",
]
