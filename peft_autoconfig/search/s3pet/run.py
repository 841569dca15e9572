"""One S3PET search: train the gated super-configuration with the project's runner and read the structures off it.

The runner (`training.runner.run`) does what every training does (tokenised data, model, per-block optimiser,
divergence checks, evaluation on the selection split); `S3PETTrainer` adds the architecture side. The one-shot
stage's budget is the recipe's first fidelity level; its training subset is split into the weights' part and the
architecture's part (`S3PETSettings.arch_fraction`).
"""

from __future__ import annotations

import time
from typing import Any

from ...training.runner import RunConfig, run
from ...training.tasks import load_task
from .gates import GateController
from .positions import SuperConfiguration
from .settings import S3PETSettings
from .trainer import S3PETTrainer, SearchState


def train_search(
    superconfig: SuperConfiguration,
    settings: S3PETSettings,
    budget: int,
    score_budgets: list[int],
    *,
    model: str,
    task: Any,
    training: dict[str, Any],
    fidelity: dict[str, Any],
    eval_split: str,
    eval_subset: int | None,
    seed: int,
    progress: bool = False,
) -> tuple[SearchState, dict[str, Any]]:
    """Train one search whose shift meets `budget`; discretise and score at each of `score_budgets`.

    Returns the search's state and a summary of the run (metric of the super-configuration, wall time, steps).
    """
    controller = GateController(superconfig.counts, budget, settings.temperature, settings.shift_detach)
    state = SearchState(superconfig, controller, settings, list(score_budgets), progress=progress,
                        description=f"s3pet {budget:,} params")
    kwargs = dict(training)
    kwargs.update({k: v for k, v in fidelity.items() if v is not None})
    start = time.perf_counter()
    result = run(RunConfig(
        model_name_or_path=model, task=load_task(task), peft_config=superconfig.super_config(), output_dir=None,
        seed=seed, eval_split=eval_split, eval_subset=eval_subset, save_adapter=False, show_progress=False,
        trainer_class=S3PETTrainer, trainer_kwargs={"s3pet": state}, **kwargs,
    ))
    summary = {
        "budget": budget,
        "metric_name": result.metric_name,
        "super_metric": result.metric_value,
        "wall_time_s": time.perf_counter() - start,
        "steps": len(state.history),
        "weight_examples": state.weight_examples,
        "arch_examples": state.arch_examples,
        "train_loss": result.train_loss,
    }
    return state, summary
