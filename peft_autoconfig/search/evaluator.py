"""Evaluate one trial: build its PEFT config, train and evaluate it with the runner, never raise.

`evaluate_trial(request)` is what the driver sends to a Dask worker (or calls inline). The request is a plain,
picklable dict (`trial.TrialRequest.to_dict()`). A failed run (an exception, a diverged loss, out of memory) comes back
as `status="failed"` with the error text, so one bad point never stops a search.

The training function is `train_and_evaluate` unless the recipe names another one (`evaluator: module:function`),
which receives the same request and returns at least `metric` (and, optionally, the other result fields, e.g.
`eval_examples`, the number of examples scored, from which the metric's standard error is computed).
"""

from __future__ import annotations

import importlib
import time
import traceback
from typing import Any, Callable

from ..front import load_point_config

DEFAULT_EVALUATOR = "peft_autoconfig.search.evaluator:train_and_evaluate"


def resolve_evaluator(path: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Import `module:function` (default: `train_and_evaluate`)."""
    module_name, _, attr = (path or DEFAULT_EVALUATOR).partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"recipe field `evaluator`: cannot import {path!r}: {error}") from None


def train_and_evaluate(request: dict[str, Any]) -> dict[str, Any]:
    """Train the request's config at its fidelity with `peft_autoconfig.training.runner.run` and report metrics."""
    from ..training.runner import RunConfig, run

    from ..training.tasks import load_task

    task = load_task(request["task"])
    training = dict(request.get("training") or {})  # learning_rates, warmup_ratio, weight_decay, batch_size, ...
    training.update({k: v for k, v in (request.get("fidelity") or {}).items() if v is not None})
    config = request.get("config")
    result = run(
        RunConfig(
            model_name_or_path=request["model"],
            task=task,
            peft_config=load_point_config(config) if config is not None else None,  # None: full fine-tuning
            init_adapter=request.get("init_adapter"),
            output_dir=None,
            seed=request["seed"],
            eval_split=request["eval_split"],
            eval_subset=request.get("eval_subset"),
            save_adapter=False,
            show_progress=False,
            **training,
        )
    )
    return {
        "metric_name": result.metric_name,
        "metric": float(result.metric_value),
        "metrics": {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))},
        "train_loss": float(result.train_loss),
        "trainable_parameters": int(result.trainable_parameters),
        "trainable_parameters_with_head": int(getattr(result, "trainable_parameters_with_head", 0) or 0),
        "run_wall_time_s": float(result.wall_time_s),
        "peak_memory_bytes": int(result.peak_memory_bytes),
        "eval_examples": int(getattr(result, "eval_examples", 0) or 0) or None,  # older runners do not report it
    }


def evaluate_trial(request: dict[str, Any], function: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the request's evaluator (or `function`) and return its outcome with `status`, `error` and
    `wall_time_s`; never raises."""
    start = time.perf_counter()
    try:
        outcome = dict((function or resolve_evaluator(request.get("evaluator")))(request))
        if "metric" not in outcome:
            raise ValueError(f"evaluator {request.get('evaluator')!r} returned no `metric`: {sorted(outcome)}")
        if outcome["metric"] != outcome["metric"]:  # NaN
            raise ValueError("the evaluation metric is NaN")
        outcome.update(status="ok", error=None)
    except Exception as error:  # noqa: BLE001  (any failure is a failed trial, recorded, and the search goes on)
        tail = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])
        outcome = {"status": "failed", "error": f"{type(error).__name__}: {error}\n{tail}"[-4000:]}
    outcome["wall_time_s"] = time.perf_counter() - start
    return outcome
