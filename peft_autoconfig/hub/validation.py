"""Checks on what the Hub code reads from a folder or a repo, over `peft_autoconfig.front` (the one owner of
front.json and of config loading): its errors become `HubConfigError`s that name the repo or folder, the file and
the field (`org/name: front.json points[1]: field ...`), and a pushed front must name a usable point.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..front import Front, FrontError, FrontPoint, check_relative_path, load_point_config, read_json
from .errors import HubConfigError

SELECT_RULES: tuple[str, ...] = ("best_metric", "fewest_parameters", "best_under_budget")


@contextmanager
def hub_config_errors() -> Iterator[None]:
    """Re-raise `FrontError` (a malformed front.json or config) as `HubConfigError`, message unchanged."""
    try:
        yield
    except FrontError as error:
        raise HubConfigError(str(error)) from None


def validate_front(data: Any, where: str) -> Front:
    """A parsed front.json as a `Front` (format 1 converted), with at least one point that has a metric."""
    with hub_config_errors():
        front = Front.from_dict(data, where)
    if not front.points:
        raise HubConfigError(f"{where}: field `points` must be a non-empty list, got [].")
    for index, point in enumerate(front.points):
        if point.metric is None:
            raise HubConfigError(f"{where} points[{index}]: field `selection` (or `report`) is missing; a pushed "
                                 "point needs a measured metric.")
        if point.config_path is None:
            raise HubConfigError(f"{where} points[{index}]: field `config_path` is missing.")
    return front


def read_front(path: str | Path, where: str) -> Front:
    with hub_config_errors():
        data = read_json(path, where)
    return validate_front(data, where)


def read_config(path: str | Path, where: str) -> Any:
    """The PEFT config in the JSON file `path` (class from peft's registry, never from the file)."""
    with hub_config_errors():
        return load_point_config(path, where=where)


def relative_path(value: str, where: str, field: str) -> str:
    with hub_config_errors():
        return check_relative_path(value, where, field)


def select_point(front: Front, select: str | None, max_parameters: int | None, where: str) -> FrontPoint:
    """Choose one point of a validated front by rule.

    `best_metric` (the default): best main metric (the report mean when a final stage ran, else the selection
    value), ties to fewer parameters. `fewest_parameters`: smallest, ties to the better metric.
    `best_under_budget`: `best_metric` among points with at most `max_parameters`. `max_parameters` filters the
    points for every rule.
    """
    select = select or ("best_under_budget" if max_parameters is not None else "best_metric")
    if select not in SELECT_RULES:
        raise ValueError(f"`select` must be one of {list(SELECT_RULES)}, got {select!r}.")
    if select == "best_under_budget" and max_parameters is None:
        raise ValueError("`select='best_under_budget'` needs `max_parameters` (the parameter budget).")
    points = front.points
    if max_parameters is not None:
        fitting = [p for p in points if p.trainable_parameters <= max_parameters]
        if not fitting:
            smallest = min(points, key=lambda p: p.trainable_parameters)
            raise HubConfigError(
                f"{where}: no point of the front has at most {max_parameters:,} trainable parameters; the smallest "
                f"is {smallest.name!r} with {smallest.trainable_parameters:,}."
            )
        points = fitting
    sign = 1.0 if front.direction == "max" else -1.0
    if select == "fewest_parameters":
        return min(points, key=lambda p: (p.trainable_parameters, -sign * p.metric, p.name))
    return min(points, key=lambda p: (-sign * p.metric, p.trainable_parameters, p.name))
