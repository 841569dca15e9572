"""Multi-objective search over mixed PET configurations (pymoo): recipe -> journal -> Pareto front of PEFT configs."""

from .driver import Search, SearchResult, run_search
from .journal import Journal, JournalMismatchError, read_journal
from .recipe import Recipe, RecipeError, load_recipe, parse_recipe
from .space import SearchSpace, SpaceSpec
from .strategies import STRATEGIES, Strategy, make_strategy, register_strategy
from .trial import TrialRecord, TrialRequest

# One-shot strategies register here, not in `strategies/__init__.py`: they subclass `oneshot.OneShotStrategy`, and
# `oneshot` imports `strategies.base`, so importing them from the strategies package would be an import circle.
from .strategies import prune as _prune, supernet as _supernet  # noqa: E402,F401  (registration)

__all__ = [
    "Journal",
    "JournalMismatchError",
    "Recipe",
    "RecipeError",
    "STRATEGIES",
    "Search",
    "SearchResult",
    "SearchSpace",
    "SpaceSpec",
    "Strategy",
    "TrialRecord",
    "TrialRequest",
    "load_recipe",
    "make_strategy",
    "parse_recipe",
    "read_journal",
    "register_strategy",
    "run_search",
]
