"""Multi-objective search over mixed PET configurations (pymoo): recipe -> journal -> Pareto front of PEFT configs."""

from .driver import Search, SearchResult, run_search
from .journal import Journal, read_journal
from .recipe import Recipe, RecipeError, load_recipe, parse_recipe
from .strategies import STRATEGIES, Strategy, make_strategy

__all__ = [
    "Journal",
    "Recipe",
    "RecipeError",
    "STRATEGIES",
    "Search",
    "SearchResult",
    "Strategy",
    "load_recipe",
    "make_strategy",
    "parse_recipe",
    "read_journal",
    "run_search",
]
