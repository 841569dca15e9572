"""One-shot strategies: methods that search by training once rather than by asking for trials.

S3PET (a differentiable budgeted search), pruning a large PET architecture (Lawton et al.) and a weight-sharing
super-PET (Klein et al.) each train one model and read configurations off it. They do not fit ask/tell, so they
implement `OneShotStrategy.search(context)` (`search.strategies.oneshot`, registered like every strategy), which
returns configurations (`OneShotResult`). Everything after that is
the driver's, the same as for NSGA-II: each returned configuration is re-trained from scratch as an ordinary, journaled
trial at the recipe's last fidelity level on the selection split, those measurements are the front, and the final
stage and the export run unchanged. A one-shot method therefore never writes front files, and its claims (its own
score of a configuration) are checked by stand-alone training: at the last level, or, for a method that scores its
configurations and is told not to re-train them (`supernet`'s `retrain: false`), only in the final stage, with the
scores as the front's selection values (`OneShotStrategy.retrains_front`).

The one-shot stage's outcome is cached in `<out>/oneshot.json` (keyed by the recipe's fingerprint), so a resumed
search does not train it again; an interrupted one-shot stage restarts from its beginning.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np


ONESHOT_FILE = "oneshot.json"
ONESHOT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class OneShotContext:
    """What a one-shot method may use. It selects on `selection_split` only; the report split is never passed."""

    model: str
    """Local path or Hub id of the backbone."""
    task: Any
    """The recipe's task (`peft_autoconfig.training.tasks.load_task(task)`)."""
    space: Any
    """The recipe's `SearchSpace` (sizes per module, layers, the model's config)."""
    training: dict[str, Any]
    """Runner keyword arguments from the recipe (`learning_rates`, `batch_size`, `max_length`, ...)."""
    fidelity: dict[str, Any]
    """The one-shot stage's training budget: the recipe's first fidelity level (`train_subset`, `num_epochs`,
    `max_steps`). The later levels and the final stage re-train what the method returns."""
    selection_split: str
    eval_subset: Optional[int]
    seed: int
    budgets: list[int]
    """Absolute trainable-parameter budgets, ascending (empty for methods that are not budgeted)."""
    work_dir: Path
    """`<out>/oneshot`: the method's checkpoints, diagnostics and plots."""
    progress: bool = True


@dataclass
class OneShotResult:
    """One configuration read off the one-shot model."""

    config: dict[str, Any]
    """A PEFT config in `peft_autoconfig.front.config_to_dict` form (a `MixedPetConfig` normally)."""
    trainable_parameters: int
    """Its analytic count (`SearchSpace.cost` / `tuners.plan`); at most `budget` when budgeted."""
    budget: Optional[int] = None
    score: Optional[float] = None
    """The method's own estimate of the metric on the selection split (e.g. the super-PET's score)."""
    details: dict[str, Any] = field(default_factory=dict)
    """JSON-plain diagnostics (keep probabilities, surviving positions, ...), saved in oneshot.json."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_budgets(budgets: list[Any], backbone_parameters: int, max_parameters: int) -> list[int]:
    """The recipe's `budgets:` as absolute counts, ascending: ints are counts, "0.1%" strings a share of the
    backbone's parameters. Each must be >= 1 and at most `max_parameters` (the space's largest configuration)."""
    resolved = []
    for i, budget in enumerate(budgets):
        where = f"recipe field `budgets[{i}]`"
        if isinstance(budget, str):
            text = budget.strip()
            if not text.endswith("%"):
                raise ValueError(f"{where}: a budget is a parameter count or a percentage of the backbone like '0.1%', got {budget!r}")
            try:
                share = float(text[:-1])
            except ValueError:
                raise ValueError(f"{where}: cannot read {budget!r} as a percentage") from None
            value = int(share / 100.0 * backbone_parameters)
        elif isinstance(budget, (int, float)) and not isinstance(budget, bool):
            value = int(budget)
        else:
            raise ValueError(f"{where}: a budget is an int or a string like '0.1%', got {type(budget).__name__}")
        if value < 1:
            raise ValueError(f"{where}: {budget!r} is {value} parameters; a budget must be at least 1 parameter")
        if value > max_parameters:
            raise ValueError(
                f"{where}: {budget!r} is {value:,} parameters, above the search space's largest configuration "
                f"({max_parameters:,}); allowed: 1 .. {max_parameters:,} (or up to "
                f"{100.0 * max_parameters / backbone_parameters:.4g}% of the backbone's {backbone_parameters:,})"
            )
        resolved.append(value)
    return sorted(set(resolved))


def read_cached_results(out_dir: Path, fingerprint: str, budgets: list[int]) -> Optional[tuple[list[OneShotResult], float]]:
    """The cached one-shot results of this recipe (same fingerprint and budgets) and the stage's wall time, else None."""
    path = Path(out_dir) / ONESHOT_FILE
    if not path.is_file():
        return None
    with open(path) as handle:
        document = json.load(handle)
    if document.get("version") != ONESHOT_FORMAT_VERSION:
        return None
    if document.get("fingerprint") != fingerprint or document.get("budgets") != budgets:
        return None
    return [OneShotResult(**entry) for entry in document["results"]], float(document.get("wall_time_s") or 0.0)


def write_results(out_dir: Path, fingerprint: str, budgets: list[int], results: list[OneShotResult],
                  wall_time_s: float, algorithm: str) -> Path:
    """oneshot.json, written atomically (a crash never leaves a half file that a resume would trust)."""
    path = Path(out_dir) / ONESHOT_FILE
    document = {
        "version": ONESHOT_FORMAT_VERSION, "algorithm": algorithm, "fingerprint": fingerprint, "budgets": budgets,
        "wall_time_s": wall_time_s, "results": [r.to_dict() for r in results],
    }
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as handle:
        json.dump(document, handle, indent=2, default=_plain)
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-plain: {type(value).__name__}")


__all__ = [
    "ONESHOT_FILE", "OneShotContext", "OneShotResult", "read_cached_results", "resolve_budgets",
    "write_results",
]
