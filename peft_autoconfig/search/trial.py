"""What a trial asks (`TrialRequest`) and what it gave (`TrialRecord`, one journal line, versioned).

The request is sent to the evaluator as a plain dict (`to_dict()`: picklable for Dask, readable by user
evaluators named in a recipe). The record is built here from the request and the evaluator's outcome, so the
driver only decides *which* trials run, and the journal, the plot and the export read typed fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

TRIAL_FORMAT_VERSION = 2
"""Version of a journal line (and of the journal header). Wave-1 journals (unversioned lines) are version 1."""

FAILED_F = 1e15
"""Objective value of a failed trial (every objective): worse than any real point, finite so crowding works."""

KINDS = ("search", "promotion", "baseline", "final")


@dataclass(frozen=True)
class TrialRequest:
    """One training run to do: a config at a fidelity (or at the final budget), for one seed."""

    trial_id: int
    key: str
    """Identity in the journal: the point (or baseline config), the fidelity or final budget, the seed for finals."""
    kind: str
    name: Optional[str]
    """Baseline name, or the front point's trial id for `final` runs of a searched point."""
    x: Optional[dict[str, Any]]
    config: Optional[dict[str, Any]]
    """The PEFT config (`to_dict()` form); None = full fine-tuning."""
    level: int
    """Fidelity level index; -1 for the final stage."""
    fidelity: dict[str, Any]
    model: str
    task: Any
    training: dict[str, Any]
    """Runner keyword arguments: learning rates, warm-up, weight decay, batch size, length, ..."""
    eval_split: str
    eval_subset: Optional[int]
    seed: int
    evaluator: Optional[str] = None
    init_adapter: Optional[str] = None
    """An adapter folder the run starts from instead of a fresh initialisation: a one-shot method's warm start
    (`OneShotResult.details["init_adapter"]`, e.g. a super-PET's slice)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial, one journal line (`version` = `TRIAL_FORMAT_VERSION`)."""

    trial_id: int
    key: str
    kind: str
    name: Optional[str]
    x: Optional[dict[str, Any]]
    config: Optional[dict[str, Any]]
    level: int
    fidelity: dict[str, Any]
    seed: int
    status: str
    """"ok" or "failed"."""
    error: Optional[str]
    metric_name: str
    metric: Optional[float]
    eval_split: str
    n_eval: Optional[int]
    """Number of examples scored (the runner's `eval_examples`, else the requested subset)."""
    standard_error: Optional[float]
    """Binomial standard error `sqrt(p (1 - p) / n)` of an accuracy; None for other metrics or unknown n."""
    trainable_parameters: int
    objectives: Optional[dict[str, float]]
    F: list[float]
    wall_time_s: float
    metrics: Optional[dict[str, float]] = None
    train_loss: Optional[float] = None
    run_wall_time_s: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    trainable_parameters_with_head: Optional[int] = None
    measured_trainable_parameters: Optional[int] = None
    same_run_as: Optional[int] = None
    """The trial whose run this record shares (a final-stage config that trains the same function as that trial's:
    `front.functional_identity`); its result is copied, nothing was trained for it."""
    finished_at: str = ""
    version: int = TRIAL_FORMAT_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialRecord":
        """A record from its journal line; `ValueError` naming the version found for any other format."""
        version = data.get("version", 1)
        if version != TRIAL_FORMAT_VERSION:
            raise ValueError(f"trial record format version {version} found; this version reads {TRIAL_FORMAT_VERSION}.")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def standard_error(metric_name: str, value: Optional[float], n: Optional[int]) -> Optional[float]:
    """Binomial standard error of an accuracy measured on `n` examples (None when it does not apply)."""
    if metric_name != "accuracy" or value is None or not n or not 0 <= value <= 1:
        return None
    return math.sqrt(value * (1 - value) / n)


def build_record(
    request: TrialRequest,
    outcome: dict[str, Any],
    *,
    objectives: Sequence[str],
    analytic_parameters: Optional[int],
    metric_name: str,
) -> TrialRecord:
    """The journal record of `request` given the evaluator's `outcome` (see `evaluator.evaluate_trial`).

    `analytic_parameters` is the objective's parameter count (None: take the runner's measured count);
    `metric_name` the name to record when the outcome gives none (a failed trial).
    """
    ok = outcome.get("status") == "ok"
    parameters = analytic_parameters if analytic_parameters is not None else int(outcome.get("trainable_parameters", -1))
    metric_name = outcome.get("metric_name") or metric_name
    values = {
        "metric": outcome.get("metric"),
        "trainable_parameters": parameters,
        "wall_time_s": outcome.get("run_wall_time_s", outcome.get("wall_time_s")),
        "peak_memory_bytes": outcome.get("peak_memory_bytes"),
    }
    missing = [name for name in objectives if values[name] is None]
    if ok and missing:
        ok, outcome = False, {**outcome, "status": "failed", "error": f"the evaluation did not report {missing}"}
    F = [(-float(values[n]) if n == "metric" else float(values[n])) if ok else FAILED_F for n in objectives]
    n_eval = outcome.get("eval_examples") or request.eval_subset
    metric = float(values["metric"]) if ok else None
    return TrialRecord(
        trial_id=request.trial_id, key=request.key, kind=request.kind, name=request.name, x=request.x,
        config=request.config, level=request.level, fidelity=dict(request.fidelity), seed=request.seed,
        status="ok" if ok else "failed", error=outcome.get("error"), metric_name=metric_name, metric=metric,
        eval_split=request.eval_split, n_eval=int(n_eval) if n_eval else None,
        standard_error=standard_error(metric_name, metric, n_eval),
        trainable_parameters=parameters,
        objectives={(metric_name if n == "metric" else n): values[n] for n in objectives} if ok else None,
        F=F, wall_time_s=float(outcome.get("wall_time_s", 0.0)),
        metrics=outcome.get("metrics"), train_loss=outcome.get("train_loss"),
        run_wall_time_s=outcome.get("run_wall_time_s"), peak_memory_bytes=outcome.get("peak_memory_bytes"),
        trainable_parameters_with_head=outcome.get("trainable_parameters_with_head"),
        measured_trainable_parameters=outcome.get("trainable_parameters"),
    )


@dataclass
class RunningFront:
    """The non-dominated set of the successful trials so far (minimisation), updated one record at a time.

    The progress bar's hypervolume comes from this set, not from the whole journal after every trial.
    """

    n_obj: int
    points: list[list[float]] = field(default_factory=list)
    worst: list[float] = field(default_factory=list)
    """Largest finite value seen per objective (for reference points of measured costs)."""

    def add(self, F: Sequence[float]) -> bool:
        """Insert `F`; True if it joined the front (dominated points it beats are dropped)."""
        F = [float(v) for v in F]
        self.worst = [max(w, v) for w, v in zip(self.worst, F)] if self.worst else list(F)
        if any(all(p <= f for p, f in zip(point, F)) for point in self.points):
            return False
        self.points = [p for p in self.points if not all(f <= q for f, q in zip(F, p))] + [F]
        return True
