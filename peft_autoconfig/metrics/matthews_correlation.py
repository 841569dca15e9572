"""Matthews correlation coefficient (local copy of the Hub metric `matthews_correlation`; CoLA's GLUE metric)."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = "The Matthews correlation coefficient: a correlation in [-1, 1] between predicted and true classes."
_CITATION = "Matthews, Comparison of the predicted and observed secondary structure of T4 phage lysozyme, 1975."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): ground-truth labels.
    sample_weight (`list` of `float`): sample weights. Defaults to None.
Returns:
    matthews_correlation (`float`): 1 is perfect, 0 is chance, -1 is inverse prediction.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"],
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}
