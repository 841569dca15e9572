"""Stage 2: multi-objective search over sub-networks of a trained super-network, by inference only.

Each point is scored with the shared weights (the masked super-network on the evaluation split), its parameter
count is the exact count of its exported model (`export.exported_parameters`), and its latency is measured on
the exported model itself (random tokens at the recipe's batch size and sequence length, on this machine, median
of `repeats` forward passes). The strategies are the PET search's (`search.strategies`, setup/ask/tell), and
every scored sub-network is one line of the PET search's journal, so a killed search resumes: the strategy is
replayed with the journal's objectives and only unscored sub-networks are evaluated.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from pymoo.core.problem import Problem

from ..search.journal import Journal
from ..search.strategies import make_strategy
from ..search.trial import FAILED_F, TrialRecord, standard_error
from .export import effective_parameters, export_model, exported_parameters
from .masking import SuperNetwork
from .space import BackboneSpace, SubNetwork

OBJECTIVE_KEYS = {"metric": "metric", "parameters": "parameters", "latency": "latency_s"}


def subnetwork_key(sub: SubNetwork) -> str:
    """The journal key: points of the space that give the same sub-network share one evaluation."""
    return json.dumps(sub.to_dict(), separators=(",", ":"))


def check_latency_device(device: str) -> None:
    """`ValueError` naming `latency.device` when it asks for a GPU this machine does not have."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("recipe field `latency.device` is 'cuda' but no GPU is visible; allowed: auto, cpu, cuda.")


def measure_latency(model: torch.nn.Module, batch_size: int, sequence_length: int, repeats: int,
                    device: str = "auto") -> float:
    """Median seconds of one forward pass on random tokens (one warm-up pass first), on `device` (`auto`: where
    the model is; otherwise on a copy of it moved there)."""
    generator = torch.Generator().manual_seed(0)
    check_latency_device(device)
    if device != "auto":
        if next(model.parameters()).device.type != device:
            model = copy.deepcopy(model).to(device)
    device = next(model.parameters()).device
    inputs = torch.randint(0, model.config.vocab_size, (batch_size, sequence_length), generator=generator).to(device)
    times = []
    with torch.inference_mode():
        model(input_ids=inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate_model(model: torch.nn.Module, batches: Sequence[dict[str, torch.Tensor]],
                   compute_metrics: Callable[[Any], dict[str, float]]) -> tuple[dict[str, float], int]:
    """(the task's metrics of `model` on the collated `batches`, the number of examples), by inference only."""
    from transformers import EvalPrediction

    logits, labels = [], []
    with torch.inference_mode():
        for batch in batches:
            logits.append(model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float().cpu())
            labels.append(batch["labels"].cpu())
    scores = compute_metrics(EvalPrediction(predictions=torch.cat(logits).numpy(), label_ids=torch.cat(labels).numpy()))
    return scores, int(sum(len(b) for b in labels))


@dataclass
class SubNetworkScorer:
    """Scores sub-networks of `model`: metric with shared weights, exact exported size, measured latency."""

    model: torch.nn.Module
    batches: Sequence[dict[str, torch.Tensor]]
    """The evaluation split, collated (with `labels`)."""
    compute_metrics: Callable[[Any], dict[str, float]]
    metric_name: str
    latency: dict[str, int]
    """`batch_size`, `sequence_length`, `repeats`."""

    def __post_init__(self) -> None:
        self.model.eval()
        self.supernet = SuperNetwork(self.model)

    def __call__(self, sub: SubNetwork) -> dict[str, Any]:
        with self.supernet.use(sub):
            scores, n_eval = evaluate_model(self.model, self.batches, self.compute_metrics)
        latency = measure_latency(export_model(self.model, sub), **self.latency)
        return {
            "metric": scores[self.metric_name], "metric_name": self.metric_name, "n_eval": n_eval,
            "parameters": exported_parameters(self.model, sub),
            "effective_parameters": effective_parameters(self.model, sub), "latency_s": latency,
        }


def score_record(
    trial_id: int, kind: str, name: Optional[str], x: Optional[dict[str, Any]], sub: SubNetwork,
    score: Callable[[SubNetwork], dict[str, Any]], objectives: Sequence[str], eval_split: str, seed: int,
) -> TrialRecord:
    """Score `sub` and build its journal record (failed, with the error, if scoring raised)."""
    start = time.perf_counter()
    try:
        outcome, error = score(sub), None
    except (RuntimeError, ValueError) as exc:  # out of memory, a metric that cannot be computed
        outcome, error = {}, f"{type(exc).__name__}: {exc}"
    ok = error is None
    values = {name: outcome.get(key) for name, key in OBJECTIVE_KEYS.items()}
    F = [(-values[o] if o == "metric" else values[o]) if ok else FAILED_F for o in objectives]
    metric_name = outcome.get("metric_name", "metric")
    return TrialRecord(
        trial_id=trial_id, key=subnetwork_key(sub), kind=kind, name=name, x=x, config=sub.to_dict(), level=0,
        fidelity={}, seed=seed, status="ok" if ok else "failed", error=error, metric_name=metric_name,
        metric=outcome.get("metric"), eval_split=eval_split, n_eval=outcome.get("n_eval"),
        standard_error=standard_error(metric_name, outcome.get("metric"), outcome.get("n_eval")),
        trainable_parameters=int(outcome.get("parameters", -1)),
        objectives={"metric": values["metric"], "parameters": values["parameters"], "latency_s": values["latency"],
                    "effective_parameters": outcome.get("effective_parameters")} if ok else None,
        F=[float(f) for f in F], wall_time_s=time.perf_counter() - start,
    )


STRATEGY_OBJECTIVES = {"metric": "metric", "parameters": "trainable_parameters", "latency": "latency_s"}
"""The objective names a model-based strategy reads (`problem.objective_names`): `trainable_parameters` is exact
(the exported parameter count, known before scoring: `mobo` computes it instead of modelling it), the others are
modelled."""


@dataclass(frozen=True)
class SubNetworkSpaceView:
    """What model-based strategies (`mobo`) read off `problem.space`, as for the PET search's `SearchSpace`: the
    variables, a point's key (points giving the same sub-network share it) and repaired form, and its exact cost."""

    space: BackboneSpace
    parameters: Callable[[SubNetwork], int]
    """The exported parameter count of a sub-network (`export.exported_parameters` on the super-network)."""

    @property
    def variables(self) -> dict[str, Any]:
        return self.space.variables

    def canonical(self, x: dict[str, Any]) -> dict[str, Any]:
        return self.space.repair(x)

    def key(self, x: dict[str, Any]) -> str:
        return subnetwork_key(self.space.to_subnetwork(self.space.repair(x)))

    def cost(self, x: dict[str, Any]) -> int:
        return self.parameters(self.space.to_subnetwork(self.space.repair(x)))

    def max_cost(self) -> int:
        return self.parameters(self.space.largest())


def search_problem(space: BackboneSpace, objectives: Sequence[str],
                   parameters: Optional[Callable[[SubNetwork], int]]) -> Problem:
    """The pymoo problem the strategies are set up with; with `parameters`, it also carries the space view and
    objective names that model-based strategies need."""
    problem = Problem(vars=space.variables, n_obj=len(objectives))
    if parameters is not None:
        problem.space = SubNetworkSpaceView(space, parameters)
        problem.objective_names = [STRATEGY_OBJECTIVES[o] for o in objectives]
    return problem


def search_subnetworks(
    space: BackboneSpace,
    score: Callable[[SubNetwork], dict[str, Any]],
    journal: Journal,
    *,
    algorithm: str,
    n_trials: int,
    pop_size: int,
    seed: int,
    objectives: Sequence[str],
    eval_split: str,
    progress: bool = True,
) -> tuple[list[TrialRecord], int]:
    """Run (or resume) the search; (the records of the asked points in order, the number scored now).

    Every asked point counts against `n_trials`; points that give a sub-network already in the journal reuse
    its record (so a resumed search replays the same asks and tells without scoring again).
    """
    from tqdm.auto import tqdm

    model = getattr(score, "model", None)
    parameters = (lambda sub: exported_parameters(model, sub)) if model is not None else None
    if parameters is None and algorithm == "mobo":
        raise ValueError("search.algorithm `mobo` needs the exported parameter count: pass a `SubNetworkScorer`.")
    problem = search_problem(space, objectives, parameters)
    strategy = make_strategy(algorithm, pop_size, space.repair)
    strategy.setup(problem, seed)
    asked: list[TrialRecord] = []
    scored_now = 0
    with tqdm(total=n_trials, desc="sub-networks", unit="trial", disable=not progress) as bar:
        while len(asked) < n_trials:
            points = strategy.ask()[: n_trials - len(asked)]
            if not points:
                break
            batch = []
            for x in points:
                sub = space.to_subnetwork(x)
                record = journal.get(subnetwork_key(sub))
                if record is None:
                    record = journal.add(score_record(len(journal), "search", None, x, sub, score, objectives,
                                                      eval_split, seed))
                    scored_now += 1
                batch.append(record)
                bar.update(1)
            asked.extend(batch)
            strategy.tell(points, np.array([r.F for r in batch], dtype=float))
            best = max((r.metric for r in journal if r.ok and r.kind == "search"), default=float("nan"))
            bar.set_postfix(best=f"{best:.4f}", scored=scored_now)
    return asked, scored_now
