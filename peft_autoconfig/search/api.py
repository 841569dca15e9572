"""The search from Python, for `Trainer` users: `search_peft(model_init, train_dataset, eval_dataset, ...)`.

Like `Trainer.hyperparameter_search`, it takes the pieces a user already has (a `model_init` returning a fresh
model, datasets, `compute_metrics`, `TrainingArguments`) and trains every trial with a `Trainer` built from them,
so any task the user can train with `Trainer` can be searched. It runs the same driver as
`peft-autoconfig search` (journal, resume, promotion, export to `out_dir`); only the evaluator differs: trials run
in this process, one after the other.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .driver import Search
from ..front import load_point_config
from .recipe import Recipe

IGNORED_EVAL_KEYS = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch")


@dataclasses.dataclass
class TrainerEvaluator:
    """Train and evaluate one trial request with a `Trainer` made of the user's pieces (see `search_peft`)."""

    model_init: Callable[[], Any]
    train_dataset: Any
    eval_dataset: Any
    training_args: Any
    compute_metrics: Optional[Callable[[Any], dict[str, float]]] = None
    metric: Optional[str] = None
    trainer_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    learning_rates: Optional[Mapping[str, float]] = None
    """Per-block peak rates over `DEFAULT_LEARNING_RATES` (the protocol's optimiser groups); warm-up and decay come
    from `training_args`."""

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        from peft import get_peft_model
        from transformers import Trainer

        from ..training.optim import pet_optimizer_cls_and_kwargs

        model = self.model_init()
        if request["config"] is not None:
            model = get_peft_model(model, load_point_config(request["config"]))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        fidelity = request["fidelity"]
        with tempfile.TemporaryDirectory(prefix="peft-search-") as scratch:
            changes: dict[str, Any] = {"output_dir": scratch, "seed": request["seed"], "save_strategy": "no",
                                       "report_to": []}
            if fidelity.get("max_steps") is not None:
                changes["max_steps"] = fidelity["max_steps"]
            if fidelity.get("num_epochs") is not None:
                changes["num_train_epochs"] = fidelity["num_epochs"]
            if fidelity.get("batch_size") is not None:
                changes["per_device_train_batch_size"] = fidelity["batch_size"]
            args = dataclasses.replace(self.training_args, **changes)
            trainer = Trainer(model=model, args=args, train_dataset=_subset(self.train_dataset, fidelity.get("train_subset"), request["seed"]),
                              eval_dataset=self.eval_dataset, compute_metrics=self.compute_metrics,
                              optimizer_cls_and_kwargs=pet_optimizer_cls_and_kwargs(
                                  self.learning_rates, weight_decay=args.weight_decay),
                              **self.trainer_kwargs)
            start = time.perf_counter()
            train_output = trainer.train()
            metrics = trainer.evaluate()
            wall = time.perf_counter() - start
        name, value = self._metric(metrics)
        return {"metric_name": name, "metric": value, "metrics": {k: float(v) for k, v in metrics.items()},
                "train_loss": float(train_output.training_loss), "trainable_parameters": trainable,
                "run_wall_time_s": wall, "eval_examples": len(self.eval_dataset)}

    def _metric(self, metrics: Mapping[str, float]) -> tuple[str, float]:
        """The maximised metric: `metric` (without `eval_`), else the first `compute_metrics` value, else -loss."""
        if self.metric is not None:
            key = f"eval_{self.metric}"
            if key not in metrics:
                raise KeyError(f"`metric={self.metric!r}` is not among the evaluation metrics {sorted(metrics)}.")
            return self.metric, float(metrics[key])
        names = [k for k in metrics if k not in IGNORED_EVAL_KEYS]
        if names:
            return names[0].removeprefix("eval_"), float(metrics[names[0]])
        return "neg_loss", -float(metrics["eval_loss"])


def _subset(dataset: Any, n: Optional[int], seed: int) -> Any:
    """A seeded subset of `n` examples (a `datasets.Dataset` or any sized torch dataset); None = all."""
    if n is None or n >= len(dataset):
        return dataset
    if hasattr(dataset, "shuffle") and hasattr(dataset, "select"):
        return dataset.shuffle(seed=seed).select(range(n))
    import torch

    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return torch.utils.data.Subset(dataset, order)


def search_peft(
    model_init: Callable[[], Any],
    train_dataset: Any,
    eval_dataset: Any,
    training_args: Any,
    *,
    compute_metrics: Optional[Callable[[Any], dict[str, float]]] = None,
    metric: Optional[str] = None,
    out_dir: str | Path | None = None,
    space: Mapping[str, Any] | None = None,
    algorithm: str = "nsga2",
    n_trials: int = 12,
    pop_size: Optional[int] = None,
    fidelity: Sequence[Mapping[str, Any]] = ({},),
    eta: int = 3,
    objectives: Sequence[str] = ("metric", "trainable_parameters"),
    seed: Optional[int] = None,
    task_type: str = "SEQ_CLS",
    progress: bool = False,
    learning_rates: Optional[Mapping[str, float]] = None,
    algorithm_options: Optional[Mapping[str, Any]] = None,
    **trainer_kwargs: Any,
) -> list[tuple[Any, dict[str, float]]]:
    """Search PET configs for a `Trainer` workflow; returns the front as `(PEFT config, objectives)` pairs.

    Args:
        model_init: returns a fresh base model (called once per trial, and once to read its config).
        train_dataset, eval_dataset, compute_metrics, training_args: as for `Trainer`; each trial overrides
            `max_steps`/`num_train_epochs`/`per_device_train_batch_size` from its fidelity level, `seed`, and writes
            nothing to `output_dir`.
        metric: the maximised metric's name in `compute_metrics`' output (default: its first key; -loss without it).
        out_dir: the search's folder (journal, `front.json`, `front/<point>/`); default `<output_dir>/peft_search`.
            Calling again with the same arguments resumes from its journal.
        space: the recipe's `space:` block (`{"modules": [...], "sizes": {...}, "preset": "autopeft"}`).
        fidelity: the levels (`{"train_subset", "max_steps", "num_epochs", "batch_size"}`), cheapest first; `eta` promotes
            `ceil(n / eta)` per level.
        learning_rates: per-block peak learning rates (`{"lora": 3e-3, "head": 1e-3, ...}`) over
            `peft_autoconfig.training.optim.DEFAULT_LEARNING_RATES`; every trial trains with these optimiser groups
            (`training_args.learning_rate` is not used; its scheduler, warm-up and weight decay are).
        algorithm_options: the strategy's own recipe fields, e.g. for `mobo`
            `{"surrogate": "gp", "n_initial": 8, "warm_start": "runs/other_task"}` (validated like a recipe's
            `algorithm:` block). One-shot strategies (`s3pet`, `prune`, `supernet`) train through the recipe's runner
            and are not available here: use `peft-autoconfig search` with a recipe.
        trainer_kwargs: passed to every `Trainer` (e.g. `data_collator`, `processing_class`).

    Returns:
        The front, fewest trainable parameters first: each config (load it with `get_peft_model`) with its
        objectives, e.g. `{"accuracy": 0.81, "trainable_parameters": 9216}`.
    """
    from .strategies import STRATEGIES

    if algorithm in STRATEGIES and STRATEGIES[algorithm].one_shot:
        raise ValueError(
            f"`algorithm` {algorithm!r} is a one-shot strategy, which trains through the recipe runner; run it with "
            f"`peft-autoconfig search RECIPE`. Allowed here: {sorted(n for n, s in STRATEGIES.items() if not s.one_shot)}"
        )
    model_config = model_init().config
    recipe = Recipe.parse({
        "model": str(getattr(model_config, "_name_or_path", "") or model_config.model_type),
        "task": "trainer",
        "seed": training_args.seed if seed is None else seed,
        "objectives": list(objectives),
        "algorithm": {"name": algorithm, "n_trials": n_trials, **({"pop_size": pop_size} if pop_size else {}),
                      **dict(algorithm_options or {})},
        "space": dict(space or {}),
        "fidelity": {"levels": [dict(level) for level in fidelity], "eta": eta},
        "training": {"learning_rates": dict(learning_rates or {})},  # validated, and part of the journal's fingerprint
    })
    evaluate = TrainerEvaluator(model_init, train_dataset, eval_dataset, training_args, compute_metrics, metric,
                                trainer_kwargs, dict(learning_rates or {}))
    folder = Path(out_dir) if out_dir is not None else Path(training_args.output_dir) / "peft_search"
    result = Search(recipe, folder, progress=progress, evaluate=evaluate, model_config=model_config,
                    task_type=task_type).run()
    return [(load_point_config(point["config"]), dict(point["objectives"])) for point in result.front]
