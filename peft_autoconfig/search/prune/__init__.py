"""NAS by pruning a large PET architecture (Lawton et al., 2023).

Modules, one job each: `settings` (the recipe's `algorithm.settings`), `configs` (the maximal configuration and the
configurations read off the kept units), `schedule` (the geometric schedule of targets and the greedy budgeted
selection of units), `structured` and `unstructured` (the two pruners: units masked by hooks, or single weights
masked and saved to a mask file), `session` (one model trained in several Trainer windows) and `plot` (the survival
heat map). First-order importance `sum |theta * grad|` is accumulated by `tuners/units.importance_callback`. The
strategy (`algorithm.name: prune`) is `search.strategies.prune`.
"""

from .configs import config_from_masks, maximal_config
from .schedule import check_budgets, expected_steps, pruning_targets, select_units
from .settings import PruneSettings

__all__ = [
    "PruneSettings", "check_budgets", "config_from_masks", "expected_steps", "maximal_config", "pruning_targets",
    "select_units",
]
