"""Train and evaluate one PEFT config on one model and task with `transformers.Trainer` (optionally DeepSpeed).

The one code path for `peft-autoconfig train` and for the search's evaluator. It is called many times in one
process by the search, so tokenizers, tokenised splits and metric modules are cached (see `data.py`,
`metrics.py`), the caller's PEFT config is never mutated, and `show_progress=False` keeps it silent.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .callbacks import DivergenceCallback, LossProgressCallback, TrainingDiverged
from .data import load_tokenizer, model_not_found, seeded_subset, tokenized_splits
from .memory import PeakMemory
from .metrics import build_compute_metrics
from .tasks import TaskConfig, load_splits, load_task, resolve_num_labels

logger = logging.getLogger(__name__)

HEAD_MODULE_NAMES: frozenset[str] = frozenset({"classifier", "score"})
"""Names of sequence-classification heads (BERT/RoBERTa `classifier`; GPT-2/Llama `score`), as in peft's
`PeftModelForSequenceClassification`: their parameters count as head, not as PET parameters."""

EVAL_SUBSET_SEED = 0
"""The evaluation subset is fixed across runs and seeds, so trials are scored on the same examples."""

METRICS_FILE = "metrics.json"

__all__ = ["RunConfig", "RunResult", "TrainingDiverged", "run", "prepare_distributed_environment"]


@dataclass
class RunConfig:
    """One training run.

    Args:
        model_name_or_path (`str`): a local model folder or a Hub id (a sequence-classification head is added).
        task (`str` or `TaskConfig`): "rotten_tomatoes", a folder of split files, a Hub dataset, or a `TaskConfig`.
        peft_config (`peft.PeftConfig`, *optional*): the PET config; None = full fine-tuning.
        output_dir (`str`, *optional*): where the adapter (safetensors) and `metrics.json` go; None = a temporary
            folder, removed afterwards.
        seed (`int`): seeds the head and adapter init, data order and the train subset.
        train_subset (`int`, *optional*): train on this many examples (a seeded subset); None = all.
        eval_subset (`int`, *optional*): evaluate on this many examples (a fixed subset, the same for every seed).
        num_epochs (`float`): epochs over the (subset of the) train split; ignored when `max_steps > 0`.
        max_steps (`int`): optimiser steps; -1 = as many as `num_epochs` takes.
        learning_rate (`float`): peak AdamW learning rate (linear decay, no warm-up).
        batch_size (`int`): per device (with N processes the global batch is N * batch_size).
        max_length (`int`): truncation length in tokens (padding is per batch).
        eval_split (`str`): the split scored at the end ("validation" or "test").
        report_to (`str`): Trainer's `report_to` ("none", "tensorboard", "wandb", ...).
        deepspeed (`str`, *optional*): a DeepSpeed JSON config (see recipes/deepspeed/).
        save_adapter (`bool`): save the adapter (or full model) when `output_dir` is set.
        show_progress (`bool`): progress bars and library logs; False = silent (the search).
        trainer_class (`type`, *optional*): a `transformers.Trainer` subclass to train with (the backbone
            pruning's `SandwichTrainer`); None = `Trainer`.
        trainer_kwargs (`dict`): extra keyword arguments of `trainer_class`.
    """

    model_name_or_path: str
    task: Union[str, TaskConfig]
    peft_config: Optional[Any] = None
    output_dir: Optional[str] = None
    seed: int = 0
    train_subset: Optional[int] = None
    eval_subset: Optional[int] = None
    num_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 128
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
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise FileNotFoundError(
                f"`deepspeed` config {self.deepspeed} not found; the shipped ones are recipes/deepspeed/zero2.json "
                "and recipes/deepspeed/zero3.json."
            )


@dataclass
class RunResult:
    """What a run produced. `metrics` are the eval metrics without the "eval_" prefix ("loss" is the eval loss).

    `trainable_parameters` counts PET parameters only (the classification head excluded, as in
    `peft_autoconfig.count_trainable_parameters`); `trainable_parameters_with_head` adds the head.
    `peak_memory_bytes` is the process's peak RSS on CPU, `torch.cuda.max_memory_allocated` on GPU.
    `wall_time_s` covers loading, training and evaluation (not saving). `loss_history` is the per-step
    training loss (averaged over processes).
    """

    metrics: dict[str, float]
    metric_name: str
    metric_value: float
    train_loss: float
    trainable_parameters: int
    wall_time_s: float
    peak_memory_bytes: int
    output_dir: Optional[str]
    status: str = "ok"
    trainable_parameters_with_head: int = 0
    loss_history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_distributed_environment(deepspeed: Optional[str]) -> None:
    """The environment DeepSpeed needs when no launcher set it up (DESIGN.md section 4).

    Without CUDA, DeepSpeed uses its CPU accelerator (`DS_ACCELERATOR=cpu`, gloo). Without a launcher
    (no `RANK` from torchrun, deepspeed or accelerate launch) it would try MPI, so we declare a one-process
    world on a free local port. Launched runs are left as the launcher set them.
    """
    if deepspeed is None:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ and "LOCAL_RANK" not in os.environ:
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
            MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
            MASTER_PORT=os.environ.get("MASTER_PORT", str(free_port())),
        )


@contextlib.contextmanager
def library_verbosity(show_progress: bool) -> Iterator[None]:
    """Silence transformers/datasets logs and progress bars, and deprecation notices, when progress is off.

    Everything is restored afterwards, so a caller's own settings survive a quiet run.
    """
    import datasets
    import transformers

    from .data import datasets_progress

    if show_progress:
        with datasets_progress(True):
            yield
        return
    before_tf, before_ds = transformers.logging.get_verbosity(), datasets.logging.get_verbosity()
    tf_bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        with datasets_progress(False), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        transformers.logging.set_verbosity(before_tf)
        datasets.logging.set_verbosity(before_ds)
        if tf_bars:
            transformers.utils.logging.enable_progress_bar()


def load_model(model_name_or_path: str, num_labels: int, tokenizer: Any, label_names: Optional[list[str]]) -> Any:
    """A sequence-classification model with a fresh head of `num_labels` (replacing a head of another size)."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"num_labels": num_labels, "ignore_mismatched_sizes": True}
    if label_names and len(label_names) == num_labels:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    if num_labels == 1:
        kwargs["problem_type"] = "regression"
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, **kwargs)
    except OSError as error:
        raise model_not_found(model_name_or_path, error) from error
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def apply_peft(model: Any, peft_config: Any) -> Any:
    """`get_peft_model` on a copy of the config (peft fills fields in place; the search reuses its configs).

    A config without `task_type` gets "SEQ_CLS", so peft trains and saves the classification head.
    """
    from peft import get_peft_model

    config = copy.deepcopy(peft_config)
    if getattr(config, "task_type", None) is None:
        logger.warning("peft config has no task_type; using SEQ_CLS so the classification head is trained and saved.")
        config.task_type = "SEQ_CLS"
    return get_peft_model(model, config)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable parameters without the head, with the head)."""
    with_head = without_head = 0
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        count = parameter.numel()
        if hasattr(parameter, "ds_numel"):  # ZeRO-3 partitioned parameter
            count = parameter.ds_numel
        with_head += count
        if not HEAD_MODULE_NAMES.intersection(name.split(".")):
            without_head += count
    return without_head, with_head


def configure_cpu_deepspeed_state() -> None:
    """Set up accelerate's process state for DeepSpeed on CPU before `TrainingArguments` does it wrongly.

    On CPU accelerate finds no backend for DeepSpeed and records one process (`num_processes=1`) even when
    several are launched, so "auto" batch sizes fail DeepSpeed's check and batches are not sharded. Creating
    the state ourselves with gloo (then `use_configured_state`) gives DeepSpeed the true world.
    """
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def training_arguments(config: RunConfig, work_dir: str) -> Any:
    import torch
    from transformers import TrainingArguments

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or config.deepspeed is not None
    # accelerate only sets up multi-process CPU training (gloo) when told `cpu`; else each process trains alone
    cpu_distributed = distributed and not torch.cuda.is_available()
    cpu_deepspeed = cpu_distributed and config.deepspeed is not None
    if cpu_deepspeed:
        configure_cpu_deepspeed_state()
    return TrainingArguments(
        output_dir=work_dir,
        seed=config.seed,
        data_seed=config.seed,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,
        report_to=config.report_to,
        deepspeed=config.deepspeed,
        disable_tqdm=not config.show_progress,
        # per-process mean losses: without this, 2 processes report twice the loss (DESIGN.md section 4)
        average_tokens_across_devices=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every PET parameter takes part in the forward pass
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=cpu_distributed and config.deepspeed is None,
        ddp_backend="gloo" if cpu_distributed else None,
        accelerator_config={"use_configured_state": True} if cpu_deepspeed else None,
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


def _train_and_evaluate(config: RunConfig, task: TaskConfig, work_dir: str, start: float) -> tuple[RunResult, Any]:
    from transformers import DataCollatorWithPadding, PrinterCallback, ProgressCallback, Trainer, set_seed

    tokenizer = load_tokenizer(config.model_name_or_path)
    max_length = min(config.max_length, task.max_length or config.max_length)
    splits = tokenized_splits(task, tokenizer, max_length)
    if config.eval_split not in splits or "labels" not in splits[config.eval_split].column_names:
        labelled = [name for name, split in splits.items() if "labels" in split.column_names]
        raise ValueError(f"`eval_split` {config.eval_split!r} is not a labelled split of task `{task.name}`; "
                         f"labelled splits: {labelled}.")
    num_labels = resolve_num_labels(task, load_splits(task))
    train_dataset = seeded_subset(splits["train"], config.train_subset, config.seed)
    eval_dataset = seeded_subset(splits[config.eval_split], config.eval_subset, EVAL_SUBSET_SEED)

    args = training_arguments(config, work_dir)  # sets up the process group (and DeepSpeed) before the model
    set_seed(config.seed)
    model = load_model(config.model_name_or_path, num_labels, tokenizer, task.label_names)
    if config.peft_config is not None:
        model = apply_peft(model, config.peft_config)
    trainable, trainable_with_head = count_parameters(model)

    trainer = (config.trainer_class or Trainer)(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(task.metric_names, num_labels),
        callbacks=[DivergenceCallback()],
        **config.trainer_kwargs,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if config.show_progress:
        trainer.add_callback(LossProgressCallback())

    train_output = trainer.train()
    train_loss = float(train_output.training_loss)
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"training loss is {train_loss}; lower the learning rate ({config.learning_rate}).")
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
        "run": {key: getattr(config, key) for key in (
            "seed", "train_subset", "eval_subset", "num_epochs", "max_steps", "learning_rate", "batch_size",
            "max_length", "eval_split", "deepspeed")},
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    path = Path(config.output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
