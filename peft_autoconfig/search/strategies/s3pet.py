"""`algorithm.name: s3pet`: S3PET (Hu et al., 2022, "Sparse Structure Search for Delta Tuning") as a one-shot strategy.

One search per budget, as in the paper and S3Delta (`--max_num_param` is one run's budget): the shift of every step
is solved for that budget, and the search's structure is discretised at that budget. `settings.nested` trains once
at the largest budget and discretises at every budget instead. Everything is checked before any training.
"""

from __future__ import annotations

import json
from typing import Any

from ...front import config_to_dict
from ..oneshot import OneShotContext, OneShotResult
from .oneshot import OneShotStrategy
from ..s3pet.plot import plot_positions
from ..s3pet.positions import SuperConfiguration
from ..s3pet.run import train_search
from ..s3pet.settings import S3PETSettings
from .base import register_strategy

DIAGNOSTICS_FILE = "s3pet.json"
PLOT_FILE = "s3pet_positions.png"


@register_strategy
class S3PETStrategy(OneShotStrategy):
    """Differentiable budgeted structure search over the space's candidate positions (docs/search.md, "S3PET")."""

    name = "s3pet"
    budgeted = True
    settings_model = S3PETSettings
    option_names = ("settings",)

    def prepare(self, space: Any, budgets: list[int]) -> SuperConfiguration:
        """The super-configuration, with the budgets checked against it (`ValueError` naming the field)."""
        settings: S3PETSettings = self.settings
        superconfig = SuperConfiguration(space, settings.modules, settings.sizes)
        if not budgets:
            raise ValueError("recipe field `budgets`: s3pet needs one or more parameter budgets.")
        superconfig.check_budgets(list(budgets))
        return superconfig

    def check(self, space: Any, budgets: list[int]) -> None:
        self.prepare(space, budgets)

    def search(self, context: OneShotContext) -> list[OneShotResult]:
        settings: S3PETSettings = self.settings
        superconfig = self.prepare(context.space, list(context.budgets))
        budgets = sorted(context.budgets)
        runs = [(budgets[-1], budgets)] if settings.nested else [(b, [b]) for b in budgets]
        results: list[OneShotResult] = []
        diagnostics: dict[str, Any] = {"positions": superconfig.describe(), "super_parameters": superconfig.total,
                                       "settings": settings.model_dump(mode="json"), "searches": []}
        names = [p.name for p in superconfig.positions]
        for search_budget, scored in runs:
            state, summary = train_search(
                superconfig, settings, search_budget, scored, model=context.model, task=context.task,
                training=context.training, fidelity=context.fidelity, eval_split=context.selection_split,
                eval_subset=context.eval_subset, seed=context.seed, progress=context.progress,
            )
            diagnostics["searches"].append({**summary, "alpha": state.alpha, "probabilities": state.probabilities,
                                            "history": state.history})
            for budget in scored:
                chosen = state.discretisations[budget]
                metrics = state.scores[budget]
                results.append(OneShotResult(
                    config=config_to_dict(chosen.config),
                    trainable_parameters=chosen.trainable_parameters,
                    budget=budget,
                    score=_metric(metrics, summary["metric_name"]),
                    details={
                        **chosen.details(superconfig),
                        "search_budget": search_budget,
                        "probabilities": dict(zip(names, state.probabilities)),
                        "super_metric": summary["super_metric"],
                        "search_wall_time_s": summary["wall_time_s"],
                        "search_steps": summary["steps"],
                    },
                ))
        self._write_diagnostics(context, superconfig, diagnostics, results)
        return results

    @staticmethod
    def _write_diagnostics(context: OneShotContext, superconfig: SuperConfiguration, diagnostics: dict[str, Any],
                           results: list[OneShotResult]) -> None:
        context.work_dir.mkdir(parents=True, exist_ok=True)
        with open(context.work_dir / DIAGNOSTICS_FILE, "w") as handle:
            json.dump(diagnostics, handle, indent=1)
        plot_positions(
            context.work_dir / PLOT_FILE, superconfig.describe(),
            kept={r.budget: r.details["kept"] for r in results},
            probabilities={r.budget: list(r.details["probabilities"].values()) for r in results},
        )


def _metric(metrics: dict[str, float], name: str) -> float | None:
    value = metrics.get(f"eval_{name}")
    return float(value) if value is not None else None
