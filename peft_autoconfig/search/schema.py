"""The base of every recipe model: pydantic v2, unknown fields refused, errors as one `RecipeError` naming the field.

A recipe is validated once, when it is read; everything downstream (the space, the driver, the evaluator) reads
validated values. Each error message names the dotted field path (`algorithm.pop_size`,
`fidelity.levels[1].max_steps`), what was wrong and, for closed sets, the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError


class RecipeError(ValueError):
    """A recipe is malformed; the message names the field."""


def field_path(loc: tuple[Any, ...]) -> str:
    """`("fidelity", "levels", 1, "max_steps")` -> `fidelity.levels[1].max_steps`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error: Any, prefix: tuple[Any, ...]) -> str:
    loc = prefix + tuple(error["loc"])
    if error["type"] == "unknown_field":
        context = error["ctx"]
        where = field_path(loc)
        return (
            f"unknown recipe field `{field_path(loc + (context['field'],))}`; allowed fields"
            f"{' in `' + where + '`' if where else ''}: {context['allowed']}."
        )
    message = str(error["msg"]).removeprefix("Value error, ").rstrip(".")
    if message.startswith("recipe field `"):  # a cross-field rule that names its own field path
        return message + "."
    got = "" if error["type"].startswith("value_error") or error["type"] == "missing" else f", got {error['input']!r}"
    return f"recipe field `{field_path(loc)}`: {message}{got}."


def recipe_error(error: ValidationError, prefix: tuple[Any, ...] = ()) -> RecipeError:
    """One `RecipeError` listing every problem pydantic found (usually one), each naming its field."""
    return RecipeError(" ".join(_message(e, prefix) for e in error.errors(include_url=False)))


class RecipeModel(BaseModel):
    """A recipe block: typed, unknown keys refused with the allowed ones listed, errors raised as `RecipeError`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    where: ClassVar[tuple[str, ...]] = ()
    """The block's path in a recipe, prefixed to error paths when the block is parsed on its own."""

    @classmethod
    def parse(cls, data: Any) -> "RecipeModel":
        """Validate `data` (a mapping) into this block; `RecipeError` naming the dotted field path otherwise.

        (Direct construction, `SpaceSpec(modules=...)`, raises pydantic's `ValidationError`, also a `ValueError`.)
        """
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise recipe_error(error, cls.where) from None

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if key not in cls.model_fields:
                    raise PydanticCustomError(
                        "unknown_field", "unknown field {field}", {"field": key, "allowed": list(cls.model_fields)}
                    )
        return data


def check_task(task: Any) -> Any:
    """A recipe's `task`: a built-in task name, a folder of split files or a mapping (validated once, for every recipe)."""
    from collections.abc import Mapping

    if not (isinstance(task, str) and task) and not isinstance(task, Mapping):
        raise ValueError("must be a built-in task name (e.g. 'rotten_tomatoes'), a folder or a mapping")
    return dict(task) if isinstance(task, Mapping) else task
