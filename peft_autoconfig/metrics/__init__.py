"""Local `evaluate` metric modules, so the GLUE-style metrics work offline.

`evaluate.load("accuracy")` fetches a script from the Hub; these files are drop-in local copies that
`evaluate.load(<path to the .py file>)` loads without a network. `peft_autoconfig.training.metrics.load_metric`
picks them by name and falls back to `evaluate.load(name)` for any other (Hub) metric.

Each file is self-contained (evaluate copies it into its module cache and imports it from there), so no
relative imports.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).parent
LOCAL_METRICS: tuple[str, ...] = ("accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr")


def local_metric_path(name: str) -> Path | None:
    """The local module file for metric `name`, or None when we do not ship it."""
    return METRICS_DIR / f"{name}.py" if name in LOCAL_METRICS else None
