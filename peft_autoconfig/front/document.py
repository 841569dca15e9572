"""front.json: the one reader and writer of a search's result, and the file names around it.

A search output folder holds `front.json` (this document), `front/<name>/adapter_config.json` (one ordinary PEFT
config folder per front point) and `pareto.png`. Every point's config is also kept inline in front.json, so the
document alone describes the front (`show`, the model card); the folders are what peft and `train` load. A point
with unstructured `weight_masks` carries its mask file in its folder (`weight_masks.safetensors`), named relative to
the folder in both its adapter_config.json and its inline config, so the output folder can be moved or pushed.

Format 2 (written now) separates the number the search *selected on* (`selection`: split, metric, value, standard
error, n) from the held-out result of the final stage (`report`: mean, sd, standard error, n and the per-seed
values; absent until a final stage ran). Format 1 (wave 1) is read by converting it: its single `metric` per point
becomes `selection.value` on the recipe's evaluation split. Any other version is refused, naming the version found.
"""

from __future__ import annotations

import copy
import json
import math
import posixpath
import shutil
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .configs import load_point_config
from .files import (
    CONFIG_FILE,
    FORMAT_VERSION,
    FRONT_DIR,
    FRONT_FILE,
    MASK_FILE,
    PLOT_FILE,
    SUPPORTED_VERSIONS,
    FrontError,
    read_json,
)
from .stats import mean_and_sd, metric_standard_error

KINDS = ("search", "baseline")
DIRECTIONS = ("max", "min")


# -- field checks: each error names where the document came from and the field -----------------------------------
def _get(data: dict, key: str, types: tuple[type, ...], at: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    numeric = float in types
    ok = isinstance(value, types) and not isinstance(value, bool)
    if ok and numeric and not math.isfinite(value):
        raise FrontError(f"{at}: field `{key}` must be finite, got {value!r}.")
    if not ok:
        names = " or ".join("number" if t is float else t.__name__ for t in types if t is not int or not numeric)
        raise FrontError(f"{at}: field `{key}` must be {names}{' or null' if optional else ''}, got {value!r}.")
    return float(value) if numeric else value


def _object(value: Any, at: str) -> dict:
    if not isinstance(value, dict):
        raise FrontError(f"{at}: expected a JSON object, got {type(value).__name__}.")
    return value


def check_relative_path(value: str, where: str, key: str) -> str:
    """A POSIX path inside the output folder (no `..`, no leading `/`, no drive): front.json never points outside."""
    normalised = posixpath.normpath(value) if value else ""
    if (not value or value.startswith(("/", "\\")) or "\\" in value or normalised.startswith("..")
            or normalised == "." or ":" in value):
        raise FrontError(
            f"{where}: field `{key}` must be a relative path inside the repo (like 'front/p00'), got {value!r}."
        )
    return normalised


# -- the dataclasses -----------------------------------------------------------------------------------------------
@dataclass
class Selection:
    """The metric the search selected on: measured on `split` (never the report split) over `n` examples."""

    split: str
    metric: str
    value: float
    standard_error: float | None = None
    n: int | None = None

    @classmethod
    def measured(cls, split: str, metric: str, value: float, n: int | None = None) -> "Selection":
        """A selection value with its binomial standard error filled in for accuracy-like metrics when `n` is known."""
        return cls(split, metric, float(value), metric_standard_error(metric, value, n), n)

    @classmethod
    def from_dict(cls, data: Any, at: str) -> "Selection":
        data = _object(data, at)
        return cls(split=_get(data, "split", (str,), at), metric=_get(data, "metric", (str,), at),
                   value=_get(data, "value", (int, float), at),
                   standard_error=_get(data, "standard_error", (int, float), at, optional=True),
                   n=_get(data, "n", (int,), at, optional=True))


@dataclass
class Report:
    """The final stage's held-out result: mean over `seeds` (one value per seed), their sd, and a standard error."""

    split: str
    metric: str
    mean: float
    sd: float | None = None
    standard_error: float | None = None
    n: int | None = None
    seeds: list[float] = field(default_factory=list)

    @classmethod
    def from_seeds(cls, split: str, metric: str, seeds: list[float], n: int | None = None) -> "Report":
        """The report of per-seed results: mean, sample sd, and the binomial standard error of the mean for
        accuracy-like metrics on `n` held-out examples (else sd / sqrt(number of seeds), None for one seed)."""
        mean, sd = mean_and_sd([float(s) for s in seeds])
        standard_error = metric_standard_error(metric, mean, n)
        if standard_error is None and sd is not None:
            standard_error = sd / math.sqrt(len(seeds))
        return cls(split, metric, mean, sd, standard_error, n, [float(s) for s in seeds])

    @classmethod
    def from_dict(cls, data: Any, at: str) -> "Report":
        data = _object(data, at)
        seeds = data.get("seeds") or []
        if not isinstance(seeds, list) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in seeds):
            raise FrontError(f"{at}: field `seeds` must be a list of numbers (one per seed), got {seeds!r}.")
        return cls(split=_get(data, "split", (str,), at), metric=_get(data, "metric", (str,), at),
                   mean=_get(data, "mean", (int, float), at), sd=_get(data, "sd", (int, float), at, optional=True),
                   standard_error=_get(data, "standard_error", (int, float), at, optional=True),
                   n=_get(data, "n", (int,), at, optional=True), seeds=[float(s) for s in seeds])


@dataclass
class Objective:
    name: str
    direction: Literal["max", "min"]


@dataclass
class FrontPoint:
    """One configuration of the front (`kind="search"`) or a named baseline (`kind="baseline"`).

    `config` is the PEFT config as a dict (`config_to_dict`); a baseline may have None (full fine-tuning).
    `config_path` is set by `Front.save` for search points (`front/<name>`). `objectives` maps each objective's
    label to its value; `metrics` holds any other measured metric.
    """

    name: str
    trainable_parameters: int
    kind: Literal["search", "baseline"] = "search"
    config: dict[str, Any] | None = None
    config_path: str | None = None
    objectives: dict[str, float] = field(default_factory=dict)
    trial_id: int | None = None
    fidelity: dict[str, Any] = field(default_factory=dict)
    selection: Selection | None = None
    report: Report | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    x: Any = None

    @property
    def metric(self) -> float | None:
        """The headline value: the held-out report's mean when a final stage ran, else the selection value."""
        if self.report is not None:
            return self.report.mean
        return self.selection.value if self.selection is not None else None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["selection"] = asdict(self.selection) if self.selection else None
        data["report"] = asdict(self.report) if self.report else None
        return {"name": self.name, "metric": self.metric, **{k: v for k, v in data.items() if k != "name"}}

    @classmethod
    def from_dict(cls, data: Any, at: str) -> "FrontPoint":
        data = _object(data, at)
        kind = data.get("kind", "search")
        if kind not in KINDS:
            raise FrontError(f"{at}: field `kind` must be one of {list(KINDS)}, got {kind!r}.")
        params = _get(data, "trainable_parameters", (int,), at)
        if params < 0:
            raise FrontError(f"{at}: field `trainable_parameters` must be >= 0, got {params}.")
        config_path = _get(data, "config_path", (str,), at, optional=True)
        config = data.get("config")
        if config is not None and not isinstance(config, dict):
            raise FrontError(f"{at}: field `config` must be a PEFT config object or null, got {config!r}.")
        for key in ("objectives", "fidelity", "metrics"):
            if not isinstance(data.get(key) or {}, dict):
                raise FrontError(f"{at}: field `{key}` must be an object, got {data[key]!r}.")
        return cls(
            name=_get(data, "name", (str,), at), trainable_parameters=params, kind=kind, config=config,
            config_path=check_relative_path(config_path, at, "config_path") if config_path is not None else None,
            objectives=dict(data.get("objectives") or {}), trial_id=_get(data, "trial_id", (int,), at, optional=True),
            fidelity=dict(data.get("fidelity") or {}), metrics=dict(data.get("metrics") or {}), x=data.get("x"),
            selection=Selection.from_dict(data["selection"], f"{at}.selection") if data.get("selection") else None,
            report=Report.from_dict(data["report"], f"{at}.report") if data.get("report") else None,
        )


@dataclass
class Front:
    """The whole document. `model_path` is local-only (the folder the search loaded) and is never published."""

    model: str
    task: str
    metric: str
    objectives: list[Objective]
    points: list[FrontPoint]
    baselines: list[FrontPoint] = field(default_factory=list)
    reference_point: list[float] | None = None
    hypervolume: float | None = None
    search: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None

    @property
    def direction(self) -> str:
        """'max' or 'min' for the main metric (accuracy-like metrics default to 'max')."""
        return next((o.direction for o in self.objectives if o.name == self.metric), "max")

    def point(self, name: str) -> FrontPoint:
        for point in self.points + self.baselines:
            if point.name == name:
                return point
        raise KeyError(f"no point named {name!r}; points: {[p.name for p in self.points + self.baselines]}")

    def public(self) -> "Front":
        """A copy without the local-only fields (what a push publishes)."""
        shared = copy.deepcopy(self)
        shared.model_path = None
        return shared

    # -- JSON ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        document = {
            "format_version": FORMAT_VERSION, "model": self.model, "task": self.task, "metric": self.metric,
            "objectives": [asdict(o) for o in self.objectives], "reference_point": self.reference_point,
            "hypervolume": self.hypervolume, "search": self.search,
            "points": [p.to_dict() for p in self.points], "baselines": [b.to_dict() for b in self.baselines],
        }
        if self.model_path is not None:
            document["model_path"] = self.model_path
        return document

    @classmethod
    def from_dict(cls, data: Any, where: str = FRONT_FILE) -> "Front":
        """Validate a parsed front.json (format 1 is converted); errors name `where`, the point and the field."""
        data = _object(data, where)
        version = data.get("format_version")
        if version not in SUPPORTED_VERSIONS:
            raise FrontError(
                f"{where}: field `format_version` = {version!r} is not supported; this peft_autoconfig reads "
                f"{' and '.join(map(str, SUPPORTED_VERSIONS))} (writes {FORMAT_VERSION})."
            )
        if version == 1:
            data = _upgrade_v1(data, where)
        objectives = data.get("objectives") or []
        if not isinstance(objectives, list) or not all(isinstance(o, dict) and "name" in o for o in objectives):
            raise FrontError(f"{where}: field `objectives` must be a list of {{'name', 'direction'}} objects.")
        for index, objective in enumerate(objectives):
            if objective.get("direction", "max") not in DIRECTIONS:
                raise FrontError(f"{where} objectives[{index}]: field `direction` must be 'max' or 'min', "
                                 f"got {objective.get('direction')!r}.")
        reference = data.get("reference_point")
        if reference is not None and (not isinstance(reference, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in reference)):
            raise FrontError(f"{where}: field `reference_point` must be a list of numbers or null, got {reference!r}.")
        points, baselines = (data.get(key) or [] for key in ("points", "baselines"))
        for key, value in (("points", points), ("baselines", baselines)):
            if not isinstance(value, list):
                raise FrontError(f"{where}: field `{key}` must be a list, got {value!r}.")
        front = cls(
            model=_get(data, "model", (str,), where), task=_get(data, "task", (str,), where),
            metric=_get(data, "metric", (str,), where),
            objectives=[Objective(o["name"], o.get("direction", "max")) for o in objectives],
            points=[FrontPoint.from_dict(p, f"{where} points[{i}]") for i, p in enumerate(points)],
            baselines=[FrontPoint.from_dict(b, f"{where} baselines[{i}]") for i, b in enumerate(baselines)],
            reference_point=None if reference is None else [float(v) for v in reference],
            hypervolume=_get(data, "hypervolume", (int, float), where, optional=True),
            search=dict(data.get("search") or {}), model_path=_get(data, "model_path", (str,), where, optional=True),
        )
        names: set[str] = set()
        for index, point in enumerate(front.points + front.baselines):
            if point.name in names:
                raise FrontError(f"{where}: point name {point.name!r} is used twice (entry {index}).")
            names.add(point.name)
        return front

    @classmethod
    def load(cls, path: str | Path, where: str | None = None) -> "Front":
        """Read and validate `path` (a front.json, or a search output folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / FRONT_FILE
        where = where or str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; a search writes it (`peft-autoconfig search RECIPE --out DIR`).")
        return cls.from_dict(read_json(path, where), where)

    def save(self, out_dir: str | Path) -> dict[str, Any]:
        """Write front.json and `front/<name>/` (one PEFT config folder per search point); return the document.

        Folders of points no longer on the front (a resumed search) are removed; front.json is replaced atomically.
        """
        out_dir = Path(out_dir)
        front_dir = out_dir / FRONT_DIR
        front_dir.mkdir(parents=True, exist_ok=True)
        keep = set()
        for point in self.points:
            if point.config is None:
                raise FrontError(f"point {point.name!r}: field `config` is missing; a front point needs its PEFT config.")
            point.config_path = f"{FRONT_DIR}/{point.name}"
            keep.add(point.name)
            config = load_point_config(point.config, where=f"point {point.name!r}")
            if _carry_weight_masks(config, front_dir / point.name, point.name):
                point.config = {**point.config, "weight_masks": MASK_FILE}
            config.save_pretrained(str(front_dir / point.name))
        for stale in front_dir.iterdir():
            if stale.is_dir() and stale.name not in keep and (stale / CONFIG_FILE).exists():
                for file in stale.iterdir():
                    file.unlink()
                stale.rmdir()
        document = self.to_dict()
        tmp = out_dir / f"{FRONT_FILE}.tmp"
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(out_dir / FRONT_FILE)
        return document




def _carry_weight_masks(config: Any, folder: Path, name: str) -> bool:
    """Copy the mask file of `config` (if it names one) into the point's `folder` as `MASK_FILE` and name it there
    relatively; True when done. A mask file that cannot be found leaves the config as it is, with a warning (the
    folder then does not carry its masks). A point without masks loses a mask file left from an earlier save."""
    masks = getattr(config, "weight_masks", None)
    target = folder / MASK_FILE
    if not masks:
        if target.is_file():
            target.unlink()
        return False
    path = Path(masks).expanduser()
    # a relative name: the point's folder first (the front saved again in place), then the working directory
    source = next((c for c in ([path] if path.is_absolute() else [folder / path, path]) if c.is_file()), None)
    if source is None:
        warnings.warn(f"point {name!r}: `weight_masks` file {masks!r} not found; its folder will not carry the masks.",
                      stacklevel=3)
        return False
    folder.mkdir(parents=True, exist_ok=True)
    if not target.exists() or source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    config.weight_masks = MASK_FILE
    return True


def _upgrade_v1(data: dict, where: str) -> dict:
    """Format 1 -> 2: each `metric` (measured on the recipe's evaluation split) becomes `selection`."""
    recipe = (data.get("search") or {}).get("recipe") or {}
    training = recipe.get("training") if isinstance(recipe.get("training"), dict) else {}
    split = str(training.get("eval_split") or "validation")
    metric = _get(data, "metric", (str,), where)
    upgraded = {**data, "format_version": 2}
    for key, kind in (("points", "search"), ("baselines", "baseline")):
        entries = data.get(key) or []
        if not isinstance(entries, list):
            raise FrontError(f"{where}: field `{key}` must be a list, got {entries!r}.")
        converted = []
        for index, entry in enumerate(entries):
            at = f"{where} {key}[{index}]"
            value = _get(_object(entry, at), "metric", (int, float), at)
            converted.append({**entry, "kind": kind, "selection": {"split": split, "metric": metric, "value": value}})
        upgraded[key] = converted
    return upgraded
