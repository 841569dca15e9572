from .config import UniPELTConfig
from .gates import GateRecorder, GateValue, format_gate_table, summarize_gates, to_mixed_config
from .model import UniPELTModel


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
    "UniPELTModel",
    "format_gate_table",
    "summarize_gates",
    "to_mixed_config",
]
