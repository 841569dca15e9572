"""`GateLoggingCallback`: UniPELT gate means in the Trainer's logs (console, `log_history`, TensorBoard, W&B...)."""

from __future__ import annotations

from typing import Any, Optional

from torch import nn
from transformers import TrainerCallback

from .gates import GateRecorder, summarize_gates


def _tuner_of(model: nn.Module) -> nn.Module:
    """The `UniPELTModel` inside a `PeftModel` (or the tuner itself)."""
    from .model import UniPELTModel

    for candidate in (model, getattr(model, "base_model", None), getattr(model, "module", None)):
        if isinstance(candidate, UniPELTModel):
            return candidate
        inner = getattr(candidate, "base_model", None)
        if isinstance(inner, UniPELTModel):
            return inner
    raise TypeError(
        f"GateLoggingCallback needs a PEFT model with a `UniPELTConfig` adapter, got {type(model).__name__}."
    )


class GateLoggingCallback(TrainerCallback):
    """Adds mean gate values to every Trainer log, so users see which blocks the task uses.

    Training logs get `gate/<kind>_mean` (kind: lora, serial, parallel, prefix) averaged over the training steps since
    the previous log; evaluation logs get `eval_gate/<kind>_mean` averaged over the evaluation set. With
    `per_layer=True`, also `gate/layer<i>/<block>`. Values are in (0, 1).

    Keys are added to the `logs` dict in place, so callbacks that run after this one (console printer, progress bar)
    see them, and also to `trainer.state.log_history`. Reporting integrations (`report_to`) run before user callbacks;
    use `GateLoggingCallback.attach(trainer)` to put this callback first so they see the keys as well.
    """

    def __init__(self, per_layer: bool = False, adapter_name: Optional[str] = None) -> None:
        self.per_layer = per_layer
        self.adapter_name = adapter_name
        self.recorder: Optional[GateRecorder] = None

    @classmethod
    def attach(cls, trainer: Any, **kwargs: Any) -> GateLoggingCallback:
        """Create the callback and insert it first in `trainer`'s callbacks (before reporting integrations)."""
        callback = cls(**kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        callback._ensure_recorder(trainer.model)
        return callback

    def _ensure_recorder(self, model: Optional[nn.Module]) -> None:
        if self.recorder is None and model is not None:
            tuner = _tuner_of(model)
            adapter = self.adapter_name or tuner.active_adapters[0]
            self.recorder = GateRecorder(tuner, adapter)

    def on_init_end(self, args, state, control, model=None, **kwargs):
        self._ensure_recorder(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._ensure_recorder(model)
        self.recorder.reset()

    def on_prediction_step(self, args, state, control, model=None, **kwargs):
        self._ensure_recorder(model)

    def on_predict(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.reset(training=False)  # `predict` does not log; do not leak into the next eval log

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        self._ensure_recorder(model)
        if logs is None or self.recorder is None:
            return
        added: dict[str, float] = {}
        if self.recorder.has_data(training=False) and any(k.endswith("_runtime") for k in logs):
            eval_prefix = next(k for k in logs if k.endswith("_runtime"))[: -len("_runtime")]
            added.update(summarize_gates(self.recorder.table(training=False), self.per_layer, f"{eval_prefix}_gate/"))
            self.recorder.reset(training=False)
        if self.recorder.has_data(training=True) and "loss" in logs:
            added.update(summarize_gates(self.recorder.table(training=True), self.per_layer, "gate/"))
            self.recorder.reset(training=True)
        if not added:
            return
        logs.update(added)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(added)

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.reset(training=True)
