"""Task metrics through the `evaluate` API, offline for the GLUE set.

Names we ship (`peft_autoconfig.metrics.LOCAL_METRICS`) load from local module files; any other name goes
to `evaluate.load(name)` (a Hub metric, needs a network the first time). Loaded modules are cached in-process:
the search calls the runner many times.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..metrics import LOCAL_METRICS, local_metric_path

_LOADED: dict[str, Any] = {}


def load_metric(name: str) -> Any:
    """An `evaluate.EvaluationModule` for `name`: our local copy when we ship one, else `evaluate.load(name)`."""
    if name in _LOADED:
        return _LOADED[name]
    import evaluate

    path = local_metric_path(name)
    try:
        module = evaluate.load(str(path) if path is not None else name)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        raise ValueError(
            f"metric `{name}` could not be loaded: it is not one of the offline metrics {list(LOCAL_METRICS)} "
            f"and `evaluate.load({name!r})` failed ({error})."
        ) from error
    _LOADED[name] = module
    return module


def metric_kwargs(name: str, num_labels: int) -> dict[str, Any]:
    """Arguments that make a metric fit the task: F1 over more than two classes is macro-averaged."""
    if name == "f1" and num_labels > 2:
        return {"average": "macro"}
    return {}


def build_compute_metrics(metric_names: Sequence[str], num_labels: int) -> Callable[[Any], dict[str, float]]:
    """A `Trainer` `compute_metrics` function: argmax over logits (or the score itself for regression)."""
    modules = [(name, load_metric(name)) for name in metric_names]

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        logits = np.asarray(logits)
        references = np.asarray(eval_prediction.label_ids)
        predictions = logits.reshape(-1) if num_labels == 1 else logits.argmax(axis=-1)
        results: dict[str, float] = {}
        for name, module in modules:
            scores = module.compute(
                predictions=predictions.tolist(), references=references.tolist(), **metric_kwargs(name, num_labels)
            )
            for key, value in scores.items():
                if isinstance(value, (int, float, np.floating, np.integer)):
                    results[key] = float(value)
        return results

    return compute_metrics
