"""Multi-objective search over mixed PET configurations (pymoo): recipe -> journal -> Pareto front of PEFT configs."""

from .driver import Search, SearchResult, run_search
from .journal import Journal, JournalMismatchError, read_journal
from .recipe import Recipe, RecipeError, load_recipe, parse_recipe
from .space import SearchSpace, SpaceSpec
from .strategies import STRATEGIES, Strategy, make_strategy, register_strategy
from .trial import TrialRecord, TrialRequest


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
