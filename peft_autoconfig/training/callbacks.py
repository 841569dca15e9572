"""Trainer callbacks: a quieter progress bar (loss in the bar, not one printed line per step) and divergence checks."""

from __future__ import annotations

import math

from transformers import ProgressCallback, TrainerCallback


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (usually: learning rate too high)."""


class LossProgressCallback(ProgressCallback):
    """Trainer's tqdm bar, with the latest training loss as a postfix instead of a printed dict per log.

    The runner logs every step (exact multi-process losses), so printing each log would flood the terminal.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


class DivergenceCallback(TrainerCallback):
    """Raise `TrainingDiverged` as soon as a logged training loss is not finite (logging_nan_inf_filter must be off)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss} at step {state.global_step} with learning_rate={args.learning_rate}; "
                "lower the learning rate or check the data."
            )
