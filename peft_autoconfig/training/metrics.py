"""Task metrics: a name-to-function table over scikit-learn/scipy, offline, with `evaluate` for any other name.

`METRICS` holds the GLUE set (accuracy, f1, matthews_correlation, pearsonr, spearmanr); each function takes
`(predictions, references, **kwargs)` and returns `{name: value}` like the `evaluate` modules of the same name.
Any other name goes to `evaluate.load(name)` (a Hub metric: needs a network the first time), cached in-process.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

MetricFunction = Callable[..., dict[str, float]]


def accuracy(predictions: Sequence, references: Sequence, normalize: bool = True, sample_weight: Any = None) -> dict:
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))}


def f1(predictions: Sequence, references: Sequence, labels: Any = None, pos_label: int = 1, average: str = "binary",
       sample_weight: Any = None) -> dict:
    """F1; `average="macro"` for more than two classes (`metric_kwargs` sets it), None gives per-class scores."""
    from sklearn.metrics import f1_score

    score = f1_score(references, predictions, labels=labels, pos_label=pos_label, average=average,
                     sample_weight=sample_weight)
    return {"f1": float(score) if np.ndim(score) == 0 else np.asarray(score).tolist()}


def matthews_correlation(predictions: Sequence, references: Sequence, sample_weight: Any = None) -> dict:
    from sklearn.metrics import matthews_corrcoef

    return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}


def pearsonr(predictions: Sequence, references: Sequence, return_pvalue: bool = False) -> dict:
    from scipy import stats

    statistic, pvalue = stats.pearsonr(references, predictions)
    return {"pearsonr": float(statistic), **({"p-value": float(pvalue)} if return_pvalue else {})}


def spearmanr(predictions: Sequence, references: Sequence, return_pvalue: bool = False) -> dict:
    from scipy import stats

    result = stats.spearmanr(references, predictions)
    return {"spearmanr": float(result.statistic), **({"spearmanr_pvalue": float(result.pvalue)} if return_pvalue else {})}


METRICS: dict[str, MetricFunction] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearsonr": pearsonr,
    "spearmanr": spearmanr,
}
"""The offline metrics, by the names `evaluate` gives them; output keys and values match `evaluate`'s modules."""

_LOADED: dict[str, MetricFunction] = {}


def load_metric(name: str) -> MetricFunction:
    """The metric function for `name`: from `METRICS`, else an `evaluate.load(name)` module's `compute`."""
    if name in METRICS:
        return METRICS[name]
    if name not in _LOADED:
        import evaluate

        try:
            module = evaluate.load(name)
        except (FileNotFoundError, ConnectionError, OSError) as error:
            raise ValueError(
                f"metric `{name}` could not be loaded: it is not one of the offline metrics {list(METRICS)} "
                f"and `evaluate.load({name!r})` failed ({error})."
            ) from error
        _LOADED[name] = module.compute
    return _LOADED[name]


def metric_kwargs(name: str, num_labels: int) -> dict[str, Any]:
    """Arguments that make a metric fit the task: F1 over more than two classes is macro-averaged."""
    if name == "f1" and num_labels > 2:
        return {"average": "macro"}
    return {}


def build_compute_metrics(metric_names: Sequence[str], num_labels: int) -> Callable[[Any], dict[str, float]]:
    """A `Trainer` `compute_metrics` function: argmax over logits (or the score itself for regression)."""
    functions = [(name, load_metric(name)) for name in metric_names]

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        logits = np.asarray(logits)
        references = np.asarray(eval_prediction.label_ids)
        predictions = logits.reshape(-1) if num_labels == 1 else logits.argmax(axis=-1)
        results: dict[str, float] = {}
        for name, function in functions:
            scores = function(
                predictions=predictions.tolist(), references=references.tolist(), **metric_kwargs(name, num_labels)
            )
            for key, value in scores.items():
                if isinstance(value, (int, float, np.floating, np.integer)):
                    results[key] = float(value)
        return results

    return compute_metrics
