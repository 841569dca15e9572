"""Train and evaluate one PEFT config on one model and task with `transformers.Trainer` (optionally DeepSpeed).

The one code path for `peft-autoconfig train` and for the search's evaluator. It is called many times in one
process by the search, so tokenizers, tokenised splits and metric modules are cached (see `data.py`,
`metrics.py`), the caller's PEFT config is never mutated, and `show_progress=False` keeps it silent. Process-group
and DeepSpeed set-up live in `distributed.py`, log silencing in `logging_utils.py`, the per-block optimiser in
`optim.py`, loading the model and applying PEFT in `model.py`.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .callbacks import DivergenceCallback, LossProgressCallback, TrainingDiverged
from .data import load_tokenizer, seeded_subset, sorted_by_length, tokenized_splits
from .distributed import distributed_training_kwargs, prepare_distributed_environment
from .logging_utils import library_verbosity
from .memory import PeakMemory
from .metrics import build_compute_metrics
from .model import apply_peft, count_parameters, load_init_adapter, load_model
from .optim import (
    DEFAULT_WARMUP_RATIO,
    DEFAULT_WEIGHT_DECAY,
    pet_optimizer_cls_and_kwargs,
    resolve_learning_rates,
    validate_learning_rates,
)
from .tasks import TaskConfig, load_splits, load_task, resolve_num_labels


EVAL_SUBSET_SEED = 0
"""The evaluation subset is fixed across runs and seeds, so trials are scored on the same examples."""

METRICS_FILE = "metrics.json"

__all__ = ["RunConfig", "RunResult", "TrainingDiverged", "run"]


@dataclass
class RunConfig:
    """One training run.

    Args:
        model_name_or_path (`str`): a local model folder or a Hub id (a sequence-classification head is added).
        task (`str` or `TaskConfig`): "rotten_tomatoes", a folder of split files, a Hub dataset, or a `TaskConfig`.
        peft_config (`peft.PeftConfig`, *optional*): the PET config; None = full fine-tuning.
        init_adapter (`str`, *optional*): an adapter folder saved for the same config whose weights (head included)
            the run starts from instead of the fresh initialisation (a warm start, e.g. a super-PET's slice).
        output_dir (`str`, *optional*): where the adapter (safetensors) and `metrics.json` go; None = a temporary
            folder, removed afterwards.
        seed (`int`): seeds the head and adapter init, data order and the train subset.
        train_subset (`int`, *optional*): train on this many examples (a seeded subset); None = all.
        eval_subset (`int`, *optional*): evaluate on this many examples (a fixed subset, the same for every seed).
        num_epochs (`float`): epochs over the (subset of the) train split; ignored when `max_steps > 0`.
        max_steps (`int`): optimiser steps; -1 = as many as `num_epochs` takes.
        learning_rate (`float`, *optional*): one peak AdamW learning rate for every block (the single-rate
            protocol of earlier versions); None = the per-block `DEFAULT_LEARNING_RATES` of `optim.py`.
        learning_rates (`dict[str, float]`, *optional*): peak rates per block type ("lora", "serial_adapter",
            "parallel_adapter", "prefix", "bias", "gate", "head", "full"), applied over `learning_rate` (when set) or
            over the defaults; see `RunConfig.resolved_learning_rates`.
        adapter_width_scaling (`bool`): adapters wider than 24 units train at their rate x sqrt(24 / width)
            (`optim.adapter_width_factor`); False = one rate per block type whatever the width.
        warmup_ratio (`float`): fraction of the steps with a linear warm-up, then linear decay to 0; in [0, 1).
        weight_decay (`float`): AdamW weight decay on weight matrices (never biases, LayerNorm or gates).
        batch_size (`int`): per device (with N processes the global batch is N * batch_size).
        max_length (`int`): truncation length in tokens (padding is per batch).
        group_by_length (`bool`): batches of similar lengths (transformers' `LengthGroupedSampler`, training and
            evaluation): less padding, so fewer tokens a step on texts of mixed length; the same examples each epoch
            in other batches, so results differ from random batches as another data order does. False = random.
        eval_split (`str`): the split scored at the end ("validation" or "test").
        report_to (`str`): Trainer's `report_to` ("none", "tensorboard", "wandb", ...).
        deepspeed (`str`, *optional*): a DeepSpeed JSON config (see recipes/deepspeed/).
        save_adapter (`bool`): save the adapter (or full model) when `output_dir` is set.
        show_progress (`bool`): progress bars and library logs; False = silent (the search).
        trainer_class (`type`, *optional*): a `transformers.Trainer` subclass to train with (the
            sandwich rule's `training.sandwich.SandwichTrainer`); None = `Trainer`.
        trainer_kwargs (`dict`): extra keyword arguments of `trainer_class`.
    """

    model_name_or_path: str
    task: Union[str, TaskConfig]
    peft_config: Optional[Any] = None
    init_adapter: Optional[str] = None
    output_dir: Optional[str] = None
    seed: int = 0
    train_subset: Optional[int] = None
    eval_subset: Optional[int] = None
    num_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: Optional[float] = None
    learning_rates: Optional[dict[str, float]] = None
    adapter_width_scaling: bool = True
    warmup_ratio: float = DEFAULT_WARMUP_RATIO
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    batch_size: int = 16
    max_length: int = 128
    group_by_length: bool = False
    eval_split: str = "validation"
    report_to: str = "none"
    deepspeed: Optional[str] = None
    save_adapter: bool = True
    show_progress: bool = True
    trainer_class: Optional[type] = None
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train_subset", "eval_subset"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size}.")
        if self.max_length < 2:
            raise ValueError(f"`max_length` must be >= 2, got {self.max_length}.")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"`max_steps` must be -1 (use num_epochs) or positive, got {self.max_steps}.")
        if self.max_steps == -1 and not self.num_epochs > 0:
            raise ValueError(f"`num_epochs` must be > 0 when `max_steps` is -1, got {self.num_epochs}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if self.learning_rates is not None:
            self.learning_rates = validate_learning_rates(self.learning_rates)
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}.")
        if not self.weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {self.weight_decay}.")
        if not isinstance(self.group_by_length, bool):
            raise ValueError(f"`group_by_length` must be True or False, got {self.group_by_length!r}.")
        if self.init_adapter is not None and self.peft_config is None:
            raise ValueError("`init_adapter` warm-starts a PEFT config: set `peft_config` too.")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise FileNotFoundError(
                f"`deepspeed` config {self.deepspeed} not found; the shipped ones are recipes/deepspeed/zero2.json "
                "and recipes/deepspeed/zero3.json."
            )

    def resolved_learning_rates(self) -> dict[str, float]:
        """The rate of every block type: the defaults, all replaced by `learning_rate` when it is set, then the
        entries of `learning_rates`."""
        return resolve_learning_rates(self.learning_rates, self.learning_rate)


@dataclass
class RunResult:
    """What a run produced. `metrics` are the eval metrics without the "eval_" prefix ("loss" is the eval loss).

    `trainable_parameters` counts PET parameters only (the classification head excluded, as in
    `peft_autoconfig.count_trainable_parameters`); `trainable_parameters_with_head` adds the head.
    `peak_memory_bytes` is the process's peak RSS on CPU, `torch.cuda.max_memory_allocated` on GPU.
    `wall_time_s` covers loading, training and evaluation (not saving). `loss_history` is the per-step
    training loss (averaged over processes). `eval_examples` is the number of examples scored, so callers can
    give the metric a standard error.
    """

    metrics: dict[str, float]
    metric_name: str
    metric_value: float
    train_loss: float
    trainable_parameters: int
    wall_time_s: float
    peak_memory_bytes: int
    output_dir: Optional[str]
    trainable_parameters_with_head: int = 0
    eval_examples: int = 0
    loss_history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_arguments(config: RunConfig, work_dir: str) -> Any:
    """The Trainer's arguments; the learning rates and weight decay live in the optimiser's groups (`optim.py`),
    the schedule (warm-up, linear decay) here."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=work_dir,
        seed=config.seed,
        data_seed=config.seed,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=max(config.resolved_learning_rates().values()),  # unused: each group has its own rate
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,
        report_to=config.report_to,
        disable_tqdm=not config.show_progress,
        dataloader_num_workers=0,
        **distributed_training_kwargs(config.deepspeed),
    )


def run(config: RunConfig) -> RunResult:
    """Train `config.peft_config` on the task and evaluate it; see `RunConfig` and `RunResult`.

    Raises `TrainingDiverged` on a NaN/inf loss, `ModelNotFoundError` for a missing model, `ValueError`
    for data that does not fit the task (columns, labels).
    """
    start = time.perf_counter()
    prepare_distributed_environment(config.deepspeed)
    task = load_task(config.task)
    work_dir = config.output_dir or tempfile.mkdtemp(prefix="peft-autoconfig-run-")
    try:
        with library_verbosity(config.show_progress), PeakMemory() as peak:
            result, trainer = _train_and_evaluate(config, task, work_dir, start)
        result.peak_memory_bytes = peak.bytes
        if config.output_dir is not None:
            if config.save_adapter:
                trainer.save_model(config.output_dir)
            if trainer.is_world_process_zero():
                write_metrics(config, task, result, peak.kind)
        del trainer
        return result
    finally:
        if config.output_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
        gc.collect()


@dataclass
class RunData:
    """The tokenizer and tokenised splits of a run (cached across runs by `data.py`)."""

    task: TaskConfig
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any
    num_labels: int


def prepare_data(config: RunConfig, task: TaskConfig) -> RunData:
    """Tokenise the task, check the eval split, take the seeded train subset and the fixed eval subset (in length
    order: fewer padded tokens, the same metrics)."""
    tokenizer = load_tokenizer(config.model_name_or_path)
    max_length = min(config.max_length, task.max_length or config.max_length)
    splits = tokenized_splits(task, tokenizer, max_length)
    if config.eval_split not in splits or "labels" not in splits[config.eval_split].column_names:
        labelled = [name for name, split in splits.items() if "labels" in split.column_names]
        raise ValueError(f"`eval_split` {config.eval_split!r} is not a labelled split of task `{task.name}`; "
                         f"labelled splits: {labelled}.")
    num_labels = resolve_num_labels(task, load_splits(task))
    train_dataset = seeded_subset(splits["train"], config.train_subset, config.seed)
    eval_dataset = sorted_by_length(seeded_subset(splits[config.eval_split], config.eval_subset, EVAL_SUBSET_SEED))
    return RunData(task, tokenizer, train_dataset, eval_dataset, num_labels)


def build_trainer(config: RunConfig, model: Any, data: RunData, args: Any, callbacks: tuple = ()) -> Any:
    """The run's `Trainer` (or `config.trainer_class`) with the per-block optimiser and the quiet/progress callbacks;
    `callbacks` are added (one-shot methods pass their own, e.g. the pruning's importance accumulator)."""
    from transformers import DataCollatorWithPadding, PrinterCallback, ProgressCallback, Trainer

    trainer = (config.trainer_class or Trainer)(
        model=model,
        args=args,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        data_collator=DataCollatorWithPadding(data.tokenizer),
        processing_class=data.tokenizer,
        compute_metrics=build_compute_metrics(data.task.metric_names, data.num_labels),
        callbacks=[DivergenceCallback(), *callbacks],
        # built by Trainer.create_optimizer, the one path DeepSpeed also takes (it drops `optimizers=`)
        optimizer_cls_and_kwargs=pet_optimizer_cls_and_kwargs(config.resolved_learning_rates(), config.weight_decay,
                                                             config.adapter_width_scaling),
        **config.trainer_kwargs,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if config.show_progress:
        trainer.add_callback(LossProgressCallback())
    return trainer


def _train_and_evaluate(config: RunConfig, task: TaskConfig, work_dir: str, start: float) -> tuple[RunResult, Any]:
    from transformers import set_seed

    data = prepare_data(config, task)
    eval_dataset = data.eval_dataset
    args = training_arguments(config, work_dir)  # sets up the process group (and DeepSpeed) before the model
    set_seed(config.seed)
    model = load_model(config.model_name_or_path, data.num_labels, data.tokenizer, task.label_names)
    if config.peft_config is not None:
        model = apply_peft(model, config.peft_config)
        if config.init_adapter is not None:
            load_init_adapter(model, config.init_adapter)
    trainable, trainable_with_head = count_parameters(model)
    trainer = build_trainer(config, model, data, args)

    train_output = trainer.train()
    train_loss = float(train_output.training_loss)
    if not math.isfinite(train_loss):
        raise TrainingDiverged(
            f"training loss is {train_loss}; lower the learning rates ({config.resolved_learning_rates()})."
        )
    raw_metrics = trainer.evaluate()
    metrics = {
        key[len("eval_"):]: float(value)
        for key, value in raw_metrics.items()
        if key.startswith("eval_") and isinstance(value, (int, float))
        and key not in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    }
    metric_name = task.metric_names[0]
    if metric_name not in metrics:
        raise ValueError(f"metric `{metric_name}` returned keys {sorted(metrics)}, not `{metric_name}`.")
    if not math.isfinite(metrics.get("loss", 0.0)):
        raise TrainingDiverged(f"evaluation loss is {metrics['loss']}; the trained model is not usable.")
    loss_history = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    result = RunResult(
        metrics=metrics,
        metric_name=metric_name,
        metric_value=metrics[metric_name],
        train_loss=train_loss,
        trainable_parameters=trainable,
        wall_time_s=time.perf_counter() - start,
        peak_memory_bytes=0,
        output_dir=config.output_dir,
        trainable_parameters_with_head=trainable_with_head,
        eval_examples=len(eval_dataset),
        loss_history=loss_history,
    )
    return result, trainer


def write_metrics(config: RunConfig, task: TaskConfig, result: RunResult, memory_kind: str) -> Path:
    """`metrics.json`: the result plus what produced it (model, task, PEFT type, fidelity, seed)."""
    import torch

    peft_config = config.peft_config
    payload = {
        "format_version": 1,
        **result.to_dict(),
        "peak_memory_kind": memory_kind,
        "model": config.model_name_or_path,
        "task": task.name,
        "peft_type": str(getattr(getattr(peft_config, "peft_type", None), "value", None) or "FULL_FINETUNING"),
        "run": {
            **{key: getattr(config, key) for key in (
                "seed", "train_subset", "eval_subset", "num_epochs", "max_steps", "learning_rate", "warmup_ratio",
                "weight_decay", "batch_size", "max_length", "eval_split", "deepspeed", "init_adapter",
                "adapter_width_scaling", "group_by_length")},
            "learning_rates": config.resolved_learning_rates(),
        },
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    path = Path(config.output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
