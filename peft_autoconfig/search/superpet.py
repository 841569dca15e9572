"""The weight-sharing super-PET of a search space: its config, its sandwich training, its folder, its scores.

The super-PET is the space's mixed composite at the largest sizes (every module at its largest option in every
layer; LoRA on the union of the target sets, so every target set is a slice). It is trained once through the runner
with the sandwich rule (`training.sandwich.SandwichTrainer` with `PetSupernet`), saved as a plain peft adapter
folder plus `superpet.json` (what it was trained on and how), and then any point of the space is scored by
inference only on its slice (`tuners.slicing.SuperPet`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..architectures import dims_for
from ..front import config_to_dict
from ..tuners.mixed import MixedPetConfig
from ..tuners.slicing import SuperPet, repeat_rows
from .space import SearchSpace

MANIFEST = "superpet.json"
"""Written beside the adapter once training finished: the model signature, the super config, how it was trained."""


class SuperPetMismatchError(ValueError):
    """A super-PET folder that does not belong to this search (another model, another space or settings)."""


def super_config(space: SearchSpace) -> MixedPetConfig:
    """The config whose slices are all the points of `space` (see the module docstring)."""
    config = space.decode(space.largest_point())
    if space.target_options and _positive(config.lora_rank):
        union = sorted({name for option in space.target_options for name in option.split(",")})
        config = dataclasses.replace(config, target_modules=union)
    return config


@dataclass(frozen=True)
class PetSupernet:
    """`SandwichTrainer(supernet=PetSupernet(space))`: the super-PET's switch (`SuperPet`) and its students, points
    of `space` (`SearchSpace.smallest`/`sample`)."""

    space: SearchSpace

    def __call__(self, model: torch.nn.Module) -> tuple[SuperPet, SearchSpace]:
        return SuperPet(model, self.space), self.space


def model_signature(model_config: Any) -> dict[str, Any]:
    """What makes a super-PET's weights fit a model: its family and sizes."""
    dims = dims_for(model_config)
    return {"model_type": model_config.model_type, **dataclasses.asdict(dims)}


def read_manifest(directory: Path) -> Optional[dict[str, Any]]:
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def check_manifest(manifest: dict[str, Any], directory: Path, model_config: Any,
                   training: Optional[dict[str, Any]] = None) -> None:
    """Refuse a super-PET folder of another model (`model`) or, when `training` is given, trained otherwise; the
    error names the field and both values. Whether the space fits is `SuperPet.check`'s (a size larger than trained)."""
    signature = model_signature(model_config)
    if manifest.get("model_signature") != signature:
        raise SuperPetMismatchError(
            f"`model`: the super-PET in {str(directory)!r} was trained on {manifest.get('model')!r} "
            f"({manifest.get('model_signature')}); this search's model is {signature}. Use a super-PET of this model "
            "or another output folder.")
    if training is not None and _identity(manifest.get("training")) != _identity(training):
        raise SuperPetMismatchError(
            f"`algorithm.settings`: the super-PET in {str(directory)!r} was trained with {manifest.get('training')}, "
            f"this search asks for {training}; use another output folder.")


EXECUTION_ONLY: tuple[str, ...] = ("batched_students",)
"""Sandwich arguments that change how a step runs, not what it computes (the same loss and gradients): left out of
a super-PET's identity, so one trained on a GPU with its students in one pass is reused on a CPU and back."""


def _identity(training: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if not isinstance(training, dict) or not isinstance(training.get("sandwich"), dict):
        return training
    sandwich = {k: v for k, v in training["sandwich"].items() if k not in EXECUTION_ONLY}
    return {**training, "sandwich": sandwich}


def superpet_run_kwargs(context: Any, learning_rate_scale: float = 1.0,
                        num_epochs: float | None = None) -> dict[str, Any]:
    """The runner's keyword arguments for training the super-PET (recipe training at `context.fidelity`, with the
    epochs and the rate scale of `train_superpet`)."""
    from ..training.optim import resolve_learning_rates

    kwargs = dict(context.training)
    kwargs.update({k: v for k, v in context.fidelity.items() if v is not None})
    if num_epochs is not None:
        kwargs.update(num_epochs=num_epochs, max_steps=-1)
    if learning_rate_scale != 1.0:
        rates = resolve_learning_rates(kwargs.get("learning_rates"), kwargs.pop("learning_rate", None))
        kwargs["learning_rates"] = {block: rate * learning_rate_scale for block, rate in rates.items()}
    return kwargs


def superpet_training(context: Any, sandwich: dict[str, Any], run_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The identity a super-PET's manifest records (run kwargs, sandwich, seed, task) as JSON-plain data, so a
    super-PET can be matched to a recipe before anything is trained."""
    training = {"run": run_kwargs, "sandwich": sandwich, "seed": context.seed, "task": context.task}
    return _identity(json.loads(json.dumps(training, sort_keys=True, default=str)))


def train_superpet(context: Any, sandwich: dict[str, Any], directory: Path,
                   learning_rate_scale: float = 1.0, num_epochs: float | None = None,
                   batched_students: bool = False) -> dict[str, Any]:
    """Train the super-PET of `context.space` into `directory` with the sandwich rule (`sandwich`: `num_random`,
    `temperature`, `distill`) at `context.fidelity`, through the runner; a finished one there is reused (and one
    trained otherwise refused). Every per-block learning rate is multiplied by `learning_rate_scale`: the largest
    configuration, which the sandwich trains every step, may not train at the rates chosen for single sizes
    (RESULTS.md section 9). `num_epochs` trains it for that many epochs of the fidelity's training subset instead
    of the fidelity's own budget (one super-PET stands for many trials, so it may afford longer training).
    `batched_students` runs each step's students in one pass (`SandwichTrainer`; not part of the identity: the
    same gradients). Returns the manifest (its `batched_students` says how this one was trained)."""
    from ..training.runner import RunConfig, run
    from ..training.sandwich import SandwichTrainer

    directory = Path(directory)
    kwargs = superpet_run_kwargs(context, learning_rate_scale, num_epochs)
    training = superpet_training(context, sandwich, kwargs)
    manifest = read_manifest(directory)
    if manifest is not None:
        check_manifest(manifest, directory, context.space.model_config, training)
        return manifest
    if directory.exists():
        shutil.rmtree(directory)  # an unfinished training starts over
    config = super_config(context.space)
    result = run(RunConfig(
        model_name_or_path=context.model, task=context.task, peft_config=config, output_dir=str(directory),
        seed=context.seed, eval_split=context.selection_split, eval_subset=context.eval_subset,
        show_progress=context.progress, trainer_class=SandwichTrainer,
        trainer_kwargs={"supernet": PetSupernet(context.space), **sandwich, "batched_students": batched_students},
        **kwargs,
    ))
    manifest = {
        "format_version": 1, "model": context.model, "model_signature": model_signature(context.space.model_config),
        "config": config_to_dict(config), "training": training, "trainable_parameters": context.space.cost(config),
        "metric_name": result.metric_name, "metric": result.metric_value, "wall_time_s": result.wall_time_s,
        "batched_students": bool(batched_students),
    }
    tmp = directory / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(directory / MANIFEST)
    return manifest


def load_superpet(directory: Path, model: str, task: Any, space: SearchSpace) -> SuperPet:
    """The super-PET in `directory` on `model` (eval mode, on the GPU when there is one), checked to be of this
    model (`model`) and to contain every point of `space` (`SliceError` naming the size field otherwise)."""
    from peft import PeftModel

    from ..training.data import load_tokenizer
    from ..training.model import load_model
    from ..training.tasks import load_splits, load_task, resolve_num_labels

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"`algorithm.settings.superpet`: {str(directory)!r} holds no finished super-PET "
                                f"({MANIFEST} is missing).")
    check_manifest(manifest, directory, space.model_config)
    task = load_task(task)
    tokenizer = load_tokenizer(model)
    base = load_model(model, resolve_num_labels(task, load_splits(task)), tokenizer, task.label_names)
    peft_model = PeftModel.from_pretrained(base, directory).eval()
    peft_model.to("cuda" if torch.cuda.is_available() else "cpu")
    superpet = SuperPet(peft_model, space)
    superpet.check(super_config(space))
    return superpet


@dataclass
class SliceScorer:
    """Scores points of the space on the super-PET's slices, by inference only, on fixed collated batches (sorted by
    length: `training.data.length_sorted_batches`)."""

    superpet: SuperPet
    batches: list[dict[str, torch.Tensor]]
    compute_metrics: Any
    metric_name: str

    @classmethod
    def for_task(cls, superpet: SuperPet, model: str, task: Any, split: str, eval_subset: Optional[int],
                 max_length: int, batch_size: int) -> "SliceScorer":
        """The scorer on `split` (the fixed subset of `eval_subset` examples every trial is scored on)."""
        from ..training.data import length_sorted_batches, load_tokenizer, seeded_subset, tokenized_splits
        from ..training.metrics import build_compute_metrics
        from ..training.runner import EVAL_SUBSET_SEED
        from ..training.tasks import load_splits, load_task, resolve_num_labels

        task = load_task(task)
        tokenizer = load_tokenizer(model)
        splits = tokenized_splits(task, tokenizer, min(max_length, task.max_length or max_length))
        if split not in splits or "labels" not in splits[split].column_names:
            raise ValueError(f"recipe field `evaluation.selection_split`: {split!r} is not a labelled split of the "
                             f"task; splits: {sorted(splits)}.")
        dataset = seeded_subset(splits[split], eval_subset, EVAL_SUBSET_SEED)
        batches = length_sorted_batches(dataset, tokenizer, batch_size)
        num_labels = resolve_num_labels(task, load_splits(task))
        return cls(superpet, batches, build_compute_metrics(task.metric_names, num_labels), task.metric_names[0])

    @property
    def n_examples(self) -> int:
        """How many examples each slice is scored on."""
        return sum(int(batch["labels"].shape[0]) for batch in self.batches)

    def __call__(self, sub: Any) -> float:
        """The task metric of slice `sub` (a point or a `MixedPetConfig`) on the batches."""
        model = self.superpet.model
        device = next(model.parameters()).device
        logits = []
        with torch.inference_mode(), self.superpet.use(sub):
            for batch in self.batches:
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                logits.append(model(**inputs).logits.float().cpu())
        return self._metric(torch.cat(logits))

    def score_many(self, subs: list[Any]) -> list[float]:
        """The metrics of several slices, scored side by side in one pass per batch (`SuperPet.use_rows`: the
        batch repeated once per slice); the same values as `self(sub)` for each, in fewer and larger passes."""
        model = self.superpet.model
        device = next(model.parameters()).device
        logits: list[list[torch.Tensor]] = [[None] * len(self.batches) for _ in subs]
        by_size: dict[int, list[int]] = {}
        for index, batch in enumerate(self.batches):
            by_size.setdefault(int(batch["labels"].shape[0]), []).append(index)
        with torch.inference_mode():
            for rows, indices in by_size.items():
                with self.superpet.use_rows(subs, rows):
                    for index in indices:
                        inputs = {k: v.to(device) for k, v in self.batches[index].items() if k != "labels"}
                        out = model(**repeat_rows(inputs, len(subs), rows)).logits.float().cpu()
                        for i in range(len(subs)):
                            logits[i][index] = out[i * rows:(i + 1) * rows]
        return [self._metric(torch.cat(parts)) for parts in logits]

    def _metric(self, logits: torch.Tensor) -> float:
        from transformers import EvalPrediction

        labels = torch.cat([batch["labels"] for batch in self.batches])
        scores = self.compute_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
        return float(scores[self.metric_name])


def _positive(value: Any) -> bool:
    return value > 0 if isinstance(value, int) else any(v > 0 for v in value.values())


def save_slice(superpet: SuperPet, config: MixedPetConfig, model: str, task: Any, directory: Path) -> Path:
    """Save slice `config` of the super-PET as a plain peft adapter folder (its weights copied out of the shared
    ones), e.g. to warm-start a stand-alone re-training from it."""
    from peft import get_peft_model

    from ..training.data import load_tokenizer
    from ..training.model import load_model
    from ..training.tasks import load_splits, load_task, resolve_num_labels

    superpet.check(config)
    task = load_task(task)
    base = load_model(model, resolve_num_labels(task, load_splits(task)), load_tokenizer(model), task.label_names)
    standalone = get_peft_model(base, copy.deepcopy(config))
    superpet.copy_slice_into(standalone.to(next(superpet.model.parameters()).device))
    standalone.save_pretrained(directory)
    return Path(directory)
