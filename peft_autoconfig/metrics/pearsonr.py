"""Pearson correlation (local copy of the Hub metric `pearsonr`; STS-B's GLUE metric with Spearman)."""

import datasets
import evaluate
from scipy.stats import pearsonr

_DESCRIPTION = "Pearson correlation coefficient between predictions and references, in [-1, 1]."
_CITATION = "Virtanen et al., SciPy 1.0: Fundamental Algorithms for Scientific Computing in Python, 2020."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted scores.
    references (`list` of `float`): ground-truth scores.
    return_pvalue (`bool`): also return the two-sided p-value. Defaults to False.
Returns:
    pearsonr (`float`), and p-value (`float`) when `return_pvalue` is True.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float"), "references": datasets.Value("float")}),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        statistic, pvalue = pearsonr(references, predictions)
        if return_pvalue:
            return {"pearsonr": float(statistic), "p-value": float(pvalue)}
        return {"pearsonr": float(statistic)}
