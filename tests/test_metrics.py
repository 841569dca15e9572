"""Offline metrics: the name-to-function table equals the sklearn/scipy references; other names go to `evaluate`."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from peft_autoconfig.training.metrics import METRICS, build_compute_metrics, load_metric

PREDICTIONS = [0, 1, 1, 0, 2, 1, 0, 2, 2, 1]
REFERENCES = [0, 1, 0, 0, 2, 2, 1, 2, 1, 1]


def test_every_offline_metric_is_a_function_returning_its_own_key():
    assert set(METRICS) == {"accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr"}
    for name in METRICS:
        assert load_metric(name) is METRICS[name]
        assert set(load_metric(name)(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])) == {name}


def test_other_names_go_to_evaluate_load_once(monkeypatch):
    import evaluate

    calls = []

    class Module:
        def compute(self, predictions, references):
            return {"exact": float(predictions == references)}

    monkeypatch.setattr(evaluate, "load", lambda name: calls.append(name) or Module())
    assert load_metric("hub_metric_x")(predictions=[1], references=[1]) == {"exact": 1.0}
    load_metric("hub_metric_x")
    assert calls == ["hub_metric_x"]  # cached per process


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("accuracy", {}, accuracy_score(REFERENCES, PREDICTIONS)),
        ("f1", {"average": "macro"}, f1_score(REFERENCES, PREDICTIONS, average="macro")),
        ("matthews_correlation", {}, matthews_corrcoef(REFERENCES, PREDICTIONS)),
    ],
)
def test_classification_metrics_match_sklearn(name, kwargs, expected):
    result = load_metric(name)(predictions=PREDICTIONS, references=REFERENCES, **kwargs)
    assert result == {name: pytest.approx(expected)}
    assert 0.0 < abs(expected) < 1.0  # the case is not trivial


def test_binary_f1_and_correlations_match_references():
    binary_predictions, binary_references = [1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0]
    assert load_metric("f1")(predictions=binary_predictions, references=binary_references)["f1"] == (
        pytest.approx(f1_score(binary_references, binary_predictions))
    )
    scores, gold = [0.1, 0.4, 0.35, 0.8, 0.5], [0.0, 0.5, 0.2, 1.0, 0.9]
    assert load_metric("pearsonr")(predictions=scores, references=gold)["pearsonr"] == pytest.approx(
        pearsonr(gold, scores).statistic
    )
    result = load_metric("spearmanr")(predictions=scores, references=gold, return_pvalue=True)
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
