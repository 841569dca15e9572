"""Offline metric modules: loaded through `evaluate` from local files, equal to the sklearn/scipy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from peft_autoconfig.metrics import LOCAL_METRICS, local_metric_path
from peft_autoconfig.training.metrics import build_compute_metrics, load_metric

PREDICTIONS = [0, 1, 1, 0, 2, 1, 0, 2, 2, 1]
REFERENCES = [0, 1, 0, 0, 2, 2, 1, 2, 1, 1]


def test_every_local_metric_loads_offline_through_evaluate():
    import evaluate

    for name in LOCAL_METRICS:
        module = load_metric(name)
        assert isinstance(module, evaluate.EvaluationModule)
        assert module.name == name
        assert local_metric_path(name).is_file()
    assert load_metric("accuracy") is load_metric("accuracy")  # cached per process


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("accuracy", {}, accuracy_score(REFERENCES, PREDICTIONS)),
        ("f1", {"average": "macro"}, f1_score(REFERENCES, PREDICTIONS, average="macro")),
        ("matthews_correlation", {}, matthews_corrcoef(REFERENCES, PREDICTIONS)),
    ],
)
def test_classification_metrics_match_sklearn(name, kwargs, expected):
    result = load_metric(name).compute(predictions=PREDICTIONS, references=REFERENCES, **kwargs)
    assert result == {name: pytest.approx(expected)}
    assert 0.0 < abs(expected) < 1.0  # the case is not trivial


def test_binary_f1_and_correlations_match_references():
    binary_predictions, binary_references = [1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0]
    assert load_metric("f1").compute(predictions=binary_predictions, references=binary_references)["f1"] == (
        pytest.approx(f1_score(binary_references, binary_predictions))
    )
    scores, gold = [0.1, 0.4, 0.35, 0.8, 0.5], [0.0, 0.5, 0.2, 1.0, 0.9]
    assert load_metric("pearsonr").compute(predictions=scores, references=gold)["pearsonr"] == pytest.approx(
        pearsonr(gold, scores).statistic
    )
    result = load_metric("spearmanr").compute(predictions=scores, references=gold, return_pvalue=True)
    assert result["spearmanr"] == pytest.approx(spearmanr(gold, scores).statistic)
    assert 0.0 <= result["spearmanr_pvalue"] <= 1.0


def test_unknown_metric_offline_names_the_offline_metrics():
    with pytest.raises(ValueError, match=r"metric `no_such_metric` could not be loaded.*'accuracy'"):
        load_metric("no_such_metric")


def test_compute_metrics_argmaxes_logits_and_macro_averages_multiclass_f1():
    logits = np.eye(3)[PREDICTIONS] * 2.0 - 1.0
    compute = build_compute_metrics(["accuracy", "f1"], num_labels=3)
    result = compute(EvalPrediction(predictions=logits, label_ids=np.array(REFERENCES)))
    assert result == {
        "accuracy": pytest.approx(accuracy_score(REFERENCES, PREDICTIONS)),
        "f1": pytest.approx(f1_score(REFERENCES, PREDICTIONS, average="macro")),
    }


def test_compute_metrics_uses_the_score_for_regression():
    scores = np.array([[0.1], [0.4], [0.35], [0.8]])
    gold = np.array([0.0, 0.5, 0.2, 1.0])
    result = build_compute_metrics(["pearsonr"], num_labels=1)(EvalPrediction(predictions=scores, label_ids=gold))
    assert result["pearsonr"] == pytest.approx(pearsonr(gold, scores[:, 0]).statistic)
