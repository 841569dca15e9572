"""The `prune-model` recipe: model, task, sub-network space, super-network training, search and latency settings.

Validated once when read (unknown fields and bad values raise `RecipeError` naming the dotted field). Checks that
need the model (its family, its sizes against `space.min_*`) run in `check_against_model`, before any training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import Field, field_validator, model_validator

from ..search.recipe import RecipeError, resolve_task_paths, resolve_model
from ..search.schema import RecipeModel, check_task
from ..search.strategies.base import check_algorithm
from .baselines import BASELINE_RULES, IMPORTANCE_KINDS
from .rewiring import REWIRE_IMPORTANCE
from .space import BackboneSpace, Dims

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
PRUNE_OBJECTIVES = ("metric", "parameters", "latency")


class PruneSpaceSpec(RecipeModel):
    """The sub-network space (`space.BackboneSpace`)."""

    where = ("space",)
    granularity: Literal["layer", "small", "medium", "large"] = "medium"
    min_layers: PositiveInt = 1
    min_heads: PositiveInt = 1
    min_units: PositiveInt = 1


class LoraSpec(RecipeModel):
    """LoRA on the backbone for a parameter-efficient super-network (merged into the weights before the search)."""

    where = ("supernet", "lora")
    r: PositiveInt = 8
    alpha: float = 16.0
    target_modules: list[str] = Field(default_factory=lambda: ["query", "key", "value", "dense"])


class RewireSpec(RecipeModel):
    """Network rewiring (`rewiring.py`): train the full model alone for `after` of the steps, then sort every
    layer's units and heads by importance, so that the space's slices keep the important ones."""

    where = ("supernet", "rewire")
    importance: Literal[REWIRE_IMPORTANCE] = "taylor"
    """`taylor`: Michel et al.'s gradient score on `batches` training batches; `magnitude`: weight norms."""
    after: Annotated[float, Field(ge=0, lt=1)] = 0.33
    """Fraction of stage 1's steps that train the full model alone (on the labels) before the rewiring."""
    batches: PositiveInt = 32
    """Training batches the Taylor score sums over."""


class SupernetSpec(RecipeModel):
    """Stage 1: sandwich-rule fine-tuning (the runner's settings plus the sandwich's)."""

    where = ("supernet",)
    num_random: Annotated[int, Field(strict=True, ge=0)] = 2
    temperature: Annotated[float, Field(gt=0)] = 1.0
    learning_rate: Annotated[float, Field(gt=0)] = 5e-5
    batch_size: PositiveInt = 16
    max_length: Annotated[int, Field(strict=True, ge=2)] = 128
    num_epochs: Annotated[float, Field(gt=0)] = 1.0
    max_steps: Optional[PositiveInt] = None
    train_subset: Optional[PositiveInt] = None
    lora: Optional[LoraSpec] = None
    deepspeed: Optional[str] = None
    rewire: Optional[RewireSpec] = None
    """Network rewiring before the sandwich rule starts (see `RewireSpec`); None = units keep the model's order."""

    @model_validator(mode="after")
    def _rewire_without_zero(self) -> "SupernetSpec":
        if self.rewire is not None and self.deepspeed is not None:
            raise ValueError("`supernet.rewire` permutes weights and optimizer state in place, which DeepSpeed's "
                             "partitioned (ZeRO) state does not allow; drop `supernet.deepspeed` or `supernet.rewire`.")
        return self


class PruneSearchSpec(RecipeModel):
    """Stage 2: the multi-objective search over sub-networks, scored with the shared weights."""

    where = ("search",)
    algorithm: str = "nsga2"
    n_trials: PositiveInt = 50
    pop_size: PositiveInt = 10
    eval_split: str = "validation"
    eval_subset: Optional[PositiveInt] = None
    objectives: list[Literal[PRUNE_OBJECTIVES]] = Field(default_factory=lambda: list(PRUNE_OBJECTIVES), min_length=2)

    @field_validator("algorithm")
    @classmethod
    def _registered(cls, name: str) -> str:
        from ..search.strategies import STRATEGIES

        check_algorithm(name, ask_tell=True)
        STRATEGIES[name].check_available()  # e.g. `mobo` without BoTorch: the install hint, before training
        return name

    @field_validator("objectives")
    @classmethod
    def _metric_once(cls, objectives: list[str]) -> list[str]:
        if len(set(objectives)) != len(objectives) or "metric" not in objectives:
            raise ValueError(f"must contain 'metric' once and no duplicates, got {objectives}")
        return objectives


class LatencySpec(RecipeModel):
    """How latency is measured: forward passes of the exported model on random tokens, on this machine."""

    where = ("latency",)
    batch_size: PositiveInt = 8
    sequence_length: Annotated[int, Field(strict=True, ge=2)] = 128
    repeats: PositiveInt = 5
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where latency is measured: `auto` on the device the model is on (the GPU when there is one), `cpu` or
    `cuda` on that device whatever the training used (e.g. CPU latency for a CPU deployment, trained on a GPU)."""


class RetrainSpec(RecipeModel):
    """Optional short full fine-tuning of each exported front model (see `retrain.py`)."""

    where = ("retrain",)
    learning_rate: Annotated[float, Field(gt=0)] = 5e-5
    batch_size: PositiveInt = 16
    num_epochs: Annotated[float, Field(gt=0)] = 1.0
    max_steps: Optional[PositiveInt] = None
    train_subset: Optional[PositiveInt] = None


class BaselinesSpec(RecipeModel):
    """Fixed-rule baselines at the exported size of each front point (`baselines.py`), scored like the front."""

    where = ("baselines",)
    rules: list[Literal[BASELINE_RULES]] = Field(default_factory=lambda: list(BASELINE_RULES))
    importance: Literal[IMPORTANCE_KINDS] = "taylor"


class PruneRecipe(RecipeModel):
    """A validated `prune-model` recipe (see `load_prune_recipe` and recipes/prune_minilm.yaml)."""

    model: str = Field(min_length=1)
    task: Any
    seed: Annotated[int, Field(strict=True, ge=0)] = 0
    space: PruneSpaceSpec = Field(default_factory=PruneSpaceSpec)
    supernet: SupernetSpec = Field(default_factory=SupernetSpec)
    search: PruneSearchSpec = Field(default_factory=PruneSearchSpec)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    retrain: Optional[RetrainSpec] = None
    baselines: Optional[BaselinesSpec] = Field(default_factory=BaselinesSpec)
    """`null` (or `rules: []`) scores no baselines."""

    @field_validator("task")
    @classmethod
    def _task(cls, task: Any) -> Any:
        return check_task(task)

    def build_space(self, config: Any) -> BackboneSpace:
        """The space over a model of `config`; `UnsupportedModelError` / `ValueError` naming the field otherwise."""
        return BackboneSpace(Dims.from_config(config), **self.space.model_dump())

    def fingerprint(self, part: str) -> str:
        """Hash of what decides the super-network (`part="supernet"`) or the search trials (`part="search"`)."""
        include = {"model", "task", "seed", "space", "supernet"} | ({"search", "latency"} if part == "search" else set())
        data = self.model_dump(mode="json", include=include)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_prune_recipe(path: str | Path) -> PruneRecipe:
    """Read and validate a YAML recipe; relative model and data paths resolve against the recipe's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(data, Mapping):
        raise RecipeError(f"a recipe must be a mapping of fields {list(PruneRecipe.model_fields)}.")
    data = dict(data)
    model = data.get("model")
    if isinstance(model, str) and model and not Path(model).is_absolute() and (path.parent / model).exists():
        data["model"] = str((path.parent / model).resolve())
    elif isinstance(model, str):
        data["model"] = resolve_model(model)
    if "task" in data:
        data["task"] = resolve_task_paths(data["task"], path.parent)
    return PruneRecipe.parse(data)
