"""Checks on what we read from a folder or a repo: front.json and PEFT config JSON.

Only JSON is parsed here, and a config class is chosen from peft's own registry
(`PEFT_TYPE_TO_CONFIG_MAPPING`), never from anything in the file: loading a config cannot run remote code.
Every error names where the file came from (`org/name: front/p00/adapter_config.json`) and the field.
"""

from __future__ import annotations

import json
import math
import posixpath
from pathlib import Path
from typing import Any

from peft import PeftConfig

from .errors import HubConfigError

FRONT_FILE = "front.json"
CONFIG_FILE = "adapter_config.json"
FRONT_FORMAT_VERSION = 1
SELECT_RULES: tuple[str, ...] = ("best_metric", "fewest_parameters", "best_under_budget")


def load_json(path: str | Path, where: str) -> Any:
    """Parse a JSON file; a syntax error names `where` and the line."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise HubConfigError(f"{where}: not valid JSON ({error.msg} at line {error.lineno}).") from None
    except UnicodeDecodeError:
        raise HubConfigError(f"{where}: not a UTF-8 text file.") from None


def known_peft_types() -> dict[str, type[PeftConfig]]:
    """PEFT type name -> config class, as registered with peft right now (ours after `import peft_autoconfig`)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(key, "value", key)): cls for key, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def config_from_dict(data: Any, where: str) -> PeftConfig:
    """Build the right `PeftConfig` subclass from a parsed adapter_config.json, or raise `HubConfigError`."""
    if not isinstance(data, dict):
        raise HubConfigError(f"{where}: expected a JSON object, got {type(data).__name__}.")
    data = dict(data)
    data.pop("runtime_config", None)  # runtime-only, as in peft's `PeftConfig.from_json_file`
    peft_type = data.get("peft_type")
    known = known_peft_types()
    if peft_type is None:
        raise HubConfigError(f"{where}: field `peft_type` is missing; a PEFT config must name its method.")
    if not isinstance(peft_type, str) or peft_type not in known:
        raise HubConfigError(
            f"{where} field `peft_type` = {peft_type!r} is not a known PEFT type; known: {sorted(known)}; "
            "did you `import peft_autoconfig`?"
        )
    try:
        return PeftConfig.from_peft_type(**data)
    except (TypeError, ValueError, KeyError) as error:
        raise HubConfigError(f"{where}: invalid {known[peft_type].__name__}: {error}") from None


def _require(point: dict, key: str, types: tuple[type, ...], where: str) -> Any:
    value = point.get(key)
    if isinstance(value, bool) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise HubConfigError(f"{where}: field `{key}` must be {names}, got {value!r}.")
    return value


def check_relative_path(value: str, where: str, field: str) -> str:
    """A repo-relative POSIX path without `..` or a leading `/` (front.json must not point outside the repo)."""
    normalised = posixpath.normpath(value) if value else ""
    if (not value or value.startswith(("/", "\\")) or "\\" in value or normalised.startswith("..")
            or normalised == "." or ":" in value):
        raise HubConfigError(
            f"{where}: field `{field}` must be a relative path inside the repo (like 'front/p00'), got {value!r}."
        )
    return normalised


def validate_front(front: Any, where: str) -> dict:
    """Check a parsed front.json against the contract (format_version 1); return it with normalised paths."""
    if not isinstance(front, dict):
        raise HubConfigError(f"{where}: expected a JSON object, got {type(front).__name__}.")
    version = front.get("format_version")
    if version != FRONT_FORMAT_VERSION:
        raise HubConfigError(
            f"{where}: field `format_version` = {version!r} is not supported; this peft_autoconfig reads "
            f"{FRONT_FORMAT_VERSION}."
        )
    for key in ("model", "task", "metric"):
        _require(front, key, (str,), where)
    points = front.get("points")
    if not isinstance(points, list) or not points:
        raise HubConfigError(f"{where}: field `points` must be a non-empty list, got {points!r}.")
    names: set[str] = set()
    for index, point in enumerate(points):
        at = f"{where} points[{index}]"
        if not isinstance(point, dict):
            raise HubConfigError(f"{at}: expected a JSON object, got {type(point).__name__}.")
        name = _require(point, "name", (str,), at)
        if name in names:
            raise HubConfigError(f"{at}: field `name` = {name!r} is used by two points.")
        names.add(name)
        metric = _require(point, "metric", (int, float), at)
        if not math.isfinite(metric):
            raise HubConfigError(f"{at}: field `metric` must be finite, got {metric!r}.")
        if _require(point, "trainable_parameters", (int,), at) < 0:
            raise HubConfigError(f"{at}: field `trainable_parameters` must be >= 0, got {point['trainable_parameters']}.")
        point["config_path"] = check_relative_path(_require(point, "config_path", (str,), at), at, "config_path")
    objectives = front.get("objectives", [])
    if not isinstance(objectives, list) or not all(isinstance(o, dict) and "name" in o for o in objectives):
        raise HubConfigError(f"{where}: field `objectives` must be a list of {{'name', 'direction'}} objects.")
    return front


def metric_direction(front: dict) -> str:
    """'max' or 'min' for the front's main metric (from `objectives`; accuracy-like metrics default to 'max')."""
    for objective in front.get("objectives", []):
        if objective.get("name") == front["metric"]:
            direction = objective.get("direction", "max")
            if direction not in ("max", "min"):
                raise HubConfigError(
                    f"front.json objective {front['metric']!r}: field `direction` must be 'max' or 'min', "
                    f"got {direction!r}."
                )
            return direction
    return "max"


def select_point(front: dict, select: str | None, max_parameters: int | None, where: str) -> dict:
    """Choose one point of a validated front by rule.

    `best_metric` (the default): best main metric, ties to fewer parameters. `fewest_parameters`: smallest, ties to
    the better metric. `best_under_budget`: `best_metric` among points with at most `max_parameters`.
    `max_parameters` filters the points for every rule.
    """
    select = select or ("best_under_budget" if max_parameters is not None else "best_metric")
    if select not in SELECT_RULES:
        raise ValueError(f"`select` must be one of {list(SELECT_RULES)}, got {select!r}.")
    if select == "best_under_budget" and max_parameters is None:
        raise ValueError("`select='best_under_budget'` needs `max_parameters` (the parameter budget).")
    points = front["points"]
    if max_parameters is not None:
        fitting = [p for p in points if p["trainable_parameters"] <= max_parameters]
        if not fitting:
            smallest = min(points, key=lambda p: p["trainable_parameters"])
            raise HubConfigError(
                f"{where}: no point of the front has at most {max_parameters:,} trainable parameters; the smallest "
                f"is {smallest['name']!r} with {smallest['trainable_parameters']:,}."
            )
        points = fitting
    sign = 1.0 if metric_direction(front) == "max" else -1.0
    if select == "fewest_parameters":
        return min(points, key=lambda p: (p["trainable_parameters"], -sign * p["metric"], p["name"]))
    return min(points, key=lambda p: (-sign * p["metric"], p["trainable_parameters"], p["name"]))
