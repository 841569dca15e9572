"""Gated UniPELT (`PeftType.UNIPELT`); importing this package registers it with peft."""

from ...peft_types import UNIPELT, register_method
from .config import UniPELTConfig
from .gates import GateRecorder, GateValue, format_gate_table, summarize_gates, to_mixed_config
from .model import UniPELTLayer, UniPELTModel


def register() -> None:
    """Register `UNIPELT` with peft (idempotent; done on import)."""
    register_method(UNIPELT, UniPELTConfig, UniPELTModel)


register()


def __getattr__(name: str):
    # The callback imports transformers' Trainer machinery: load it only when asked for.
    if name == "GateLoggingCallback":
        from .callbacks import GateLoggingCallback

        return GateLoggingCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GateLoggingCallback",
    "GateRecorder",
    "GateValue",
    "UniPELTConfig",
    "UniPELTLayer",
    "UniPELTModel",
    "format_gate_table",
    "register",
    "summarize_gates",
    "to_mixed_config",
]
