"""One model trained in several `transformers.Trainer` windows: the initial training of the maximal configuration,
then a short re-training after every pruning step, all with the runner's data, optimiser groups and arguments.

The importance callback (`tuners/units.importance_callback`) rides on each window, so re-training also scores the
next step.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from ...tuners.mixed import MixedPetConfig
from ..oneshot import OneShotContext


class PruneSession:
    """One model trained in several Trainer windows (the runner's data, optimiser groups and arguments)."""

    def __init__(self, context: OneShotContext, config: MixedPetConfig) -> None:
        from transformers import set_seed

        from ...training.model import apply_peft, load_model
        from ...training.runner import RunConfig, prepare_data
        from ...training.tasks import load_task

        self.work_dir = Path(context.work_dir) / "trainer"
        self.run_config = RunConfig(
            model_name_or_path=context.model, task=context.task, peft_config=config, seed=context.seed,
            eval_subset=context.eval_subset, eval_split=context.selection_split, show_progress=context.progress,
            save_adapter=False, **{**context.training, **context.fidelity},
        )
        task = load_task(context.task)
        self.data = prepare_data(self.run_config, task)
        set_seed(context.seed)
        model = load_model(context.model, self.data.num_labels, self.data.tokenizer, task.label_names)
        self.model = apply_peft(model, config)
        self.trainer: Any = None

    def train(self, callbacks: list[Any], max_steps: Optional[int] = None) -> int:
        """Train for the one-shot budget (or `max_steps`); returns the number of optimiser steps taken."""
        from ...training.callbacks import TrainingDiverged
        from ...training.runner import build_trainer, training_arguments

        config = self.run_config if max_steps is None else replace(self.run_config, max_steps=max_steps)
        args = training_arguments(config, str(self.work_dir))
        trainer = build_trainer(config, self.model, self.data, args, tuple(callbacks))
        output = trainer.train()
        if not math.isfinite(float(output.training_loss)):
            raise TrainingDiverged(f"pruning: training loss is {output.training_loss}; lower the learning rates.")
        self.trainer = trainer
        return int(trainer.state.global_step)

    def evaluate(self) -> float:
        metrics = self.trainer.evaluate()
        name = self.data.task.metric_names[0]
        return float(metrics[f"eval_{name}"])
