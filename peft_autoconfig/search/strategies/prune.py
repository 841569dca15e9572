"""`algorithm.name: prune`: NAS by pruning a large PET architecture (Lawton et al., 2023).

1. Build the *maximal* configuration of the space (every module of `space.modules` at its largest size in every
   layer, the BitFit block included when the space lists `bias`; a flat prefix) and train it for the one-shot stage's
   budget (`context.fidelity`) with the recipe's training settings, through `transformers.Trainer`.
2. Score every structured unit (`tuners/units.py`: LoRA rank, adapter bottleneck unit, prefix token, a layer's bias
   block, and each whole block in a layer) by first-order importance `sum |theta * grad|`, accumulated over the
   optimiser steps by a Trainer callback.
3. Prune iteratively: each step keeps at least `keep_fraction` of the current parameters (never less than the next
   budget), chosen greedily by importance per parameter; the units are masked by hooks (no weight copied), then
   the model re-trains for `retrain_steps` steps, which also accumulates the scores of the next step.
4. On reaching each budget (largest first), read off a standard per-layer `MixedPetConfig` (sizes = surviving units)
   and, with `evaluate`, its score on the selection split. The configurations are nested: each budget's structure
   contains the next smaller one's. The driver re-trains each from scratch.

With `unstructured: true` the units are single PET weights instead (importance `|theta * grad|` per weight, the
globally least important removed), the maximal structure is kept, and each budget's bool masks are written to a new
safetensors file under `<work_dir>/masks/run-<n>/` that the configuration names (`MixedPetConfig.weight_masks`): the
re-training keeps the masks (a sparse "ticket" re-trained from a fresh initialisation), and the parameter objective
counts the non-zero weights.

The parts live in `search/prune/` (settings, schedule and selection, the two pruners, the training session, the
plot); this module is the loop over budgets and the registered strategy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...front import config_to_dict
from ...tuners.plan import count_trainable_parameters
from ...tuners.units import importance_callback
from ..oneshot import OneShotContext, OneShotResult
from .oneshot import OneShotStrategy
from ..prune.configs import maximal_config
from ..prune.plot import plot_survival
from ..prune.schedule import check_budgets, expected_steps, pruning_targets
from ..prune.session import PruneSession
from ..prune.settings import PruneSettings
from ..prune.structured import StructuredPruner
from ..prune.unstructured import UnstructuredPruner
from .base import register_strategy

TRACE_FILE = "prune_trace.json"
SURVIVAL_PLOT = "prune_survival.png"


@register_strategy
class PruneStrategy(OneShotStrategy):
    """Lawton et al. (2023): train the maximal PET architecture, prune it by first-order importance to each budget."""

    name = "prune"
    budgeted = True
    settings_model = PruneSettings

    def search(self, context: OneShotContext) -> list[OneShotResult]:
        settings: PruneSettings = self.settings
        if not context.budgets:
            raise ValueError("algorithm 'prune' needs `budgets:` in the recipe.")
        super_config, shared = maximal_config(context.space)
        model_config = context.space.model_config
        maximum = count_trainable_parameters(super_config, model_config)
        check_budgets(context.budgets, maximum)
        session = PruneSession(context, super_config)
        if settings.unstructured:
            pruner: Any = UnstructuredPruner(session.model, shared, model_config, Path(context.work_dir))
        else:
            pruner = StructuredPruner(session.model, shared, model_config)
        pruner.check_budget(context.budgets[0])
        callback = importance_callback(pruner.importance)
        initial_steps = session.train([callback])
        retrain_steps = settings.retrain_steps or max(1, initial_steps // 4)
        trace: list[dict[str, Any]] = [{"step": 0, "parameters": pruner.cost(), "trained_steps": initial_steps}]
        results: list[OneShotResult] = []
        bar = _progress(expected_steps(maximum, context.budgets, settings.keep_fraction), context.progress)
        for budget in sorted(context.budgets, reverse=True):
            for target in pruning_targets(pruner.cost(), budget, settings.keep_fraction):
                pruner.prune_to(target)
                pruner.importance.reset()
                session.train([callback], retrain_steps)
                trace.append({"step": len(trace), "target": target, "parameters": pruner.cost(), **pruner.trace()})
                if bar is not None:
                    bar.update(1)
            config, details = pruner.snapshot(budget)
            count = count_trainable_parameters(config, model_config)
            if count != pruner.cost() or count > budget:
                raise RuntimeError(
                    f"pruned config counts {count:,} parameters, kept {pruner.cost():,}, budget {budget:,}: a bug."
                )
            results.append(OneShotResult(
                config=config_to_dict(config), trainable_parameters=count, budget=budget,
                score=session.evaluate() if settings.evaluate else None,
                details={**details, "maximal_parameters": maximum, "prune_steps": len(trace) - 1,
                         "unstructured": settings.unstructured},
            ))
        if bar is not None:
            bar.close()
        _write_trace(context.work_dir, trace, maximum, initial_steps, retrain_steps)
        plot_survival(Path(context.work_dir) / SURVIVAL_PLOT, results)
        pruner.close()
        return sorted(results, key=lambda r: r.budget)


def _write_trace(work_dir: Path, trace: list[dict[str, Any]], maximum: int, initial: int, retrain: int) -> None:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    payload = {"maximal_parameters": maximum, "initial_steps": initial, "retrain_steps": retrain, "steps": trace}
    (work_dir / TRACE_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def _progress(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="pruning steps", unit="step", dynamic_ncols=True)


__all__ = ["PruneSettings", "PruneStrategy"]
