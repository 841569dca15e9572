"""The search space over `MixedPetConfig`: pymoo variables, decode/encode, repair and analytic cost.

This module is the one source of truth for what a search may propose. The default is the AutoPEFT space
(Zhou et al., 2023): one global size each for the serial adapter, the parallel adapter and the prefix, chosen from
`[0] + [hidden / 2^k]` (0 = module off), plus one binary "insert in layer i" flag per layer shared by all modules.
Options add LoRA (rank and a choice of target sets) and per-layer sizes (one size per module and layer instead of
global sizes plus flags).

A point `x` is a dict keyed by variable name (pymoo's mixed-variable convention):

- `serial_adapter_size`, `parallel_adapter_size`, `prefix_length`, `lora_rank`: `Choice` over the size options;
  with `layer_mode="sizes"` one `Choice` per layer instead, named `<field>.<layer>`;
- `lora_targets`: `Choice` over comma-joined target sets ("query,value"), only when there is more than one set;
- `layer_<i>`: `Binary` insertion flag of layer `i` (only with `layer_mode="flags"`).

Invalid points (no layer selected, or every size 0) are *repaired*, not rejected, so no evaluation is wasted:
`repair(x)` selects every layer when none is, and gives the first module of the space its smallest positive size
(in every layer) when every size is 0. `decode` of an unrepaired invalid point raises `InvalidPointError`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal, Mapping, Optional

from pydantic import Field, NonNegativeInt, field_validator, model_validator
from pymoo.core.variable import Binary, Choice, Variable

from ..architectures import dims_for, spec_for
from ..tuners.plan import count_trainable_parameters
from ..tuners.mixed import MixedPetConfig
from .schema import RecipeModel

MODULE_FIELDS: dict[str, str] = {
    "serial_adapter": "serial_adapter_size",
    "parallel_adapter": "parallel_adapter_size",
    "prefix": "prefix_length",
    "lora": "lora_rank",
}
"""Module name in a recipe -> the `MixedPetConfig` size field it sets."""

DEFAULT_MODULES: tuple[str, ...] = ("serial_adapter", "parallel_adapter", "prefix")
DEFAULT_NUM_HALVINGS = 7


class InvalidPointError(ValueError):
    """A point of the space that maps to no valid config (no layer selected or every module off)."""


class SpaceSpec(RecipeModel):
    """The recipe's `space:` block. Sizes not given default from the model (see `default_sizes`).

    Args:
        preset: "autopeft" = AutoPEFT's value sets (Zhou et al., 2023): adapter and prefix sizes
            `{0} + {hidden // 2**k for k = 0..10, >= 1}` ({0, 1, 3, 6, ..., 384, 768} for hidden size 768, the
            hidden size and 1 and 3 included); None = `[0] + hidden // 2**k` for k = 1..num_halvings.
        modules: which blocks may be searched, a subset of `MODULE_FIELDS` ("serial_adapter", "parallel_adapter",
            "prefix", "lora").
        sizes: per module, the list of allowed sizes (0 = off); overrides the preset. LoRA default: `[0, 2, 4, 8, 16]`.
        num_halvings: how many halvings of the hidden size the default size lists contain (no preset).
        lora_targets: LoRA target sets to choose from; default: the architecture's query/value projections.
        layer_mode: "flags" (global sizes + one insertion flag per layer) or "sizes" (one size per module and layer).
        fixed: other `MixedPetConfig` fields held fixed (e.g. `adapter_non_linearity`, `lora_alpha`).
    """

    where: ClassVar[tuple[str, ...]] = ("space",)

    preset: Optional[Literal["autopeft"]] = None
    modules: tuple[Literal["serial_adapter", "parallel_adapter", "prefix", "lora"], ...] = DEFAULT_MODULES
    sizes: dict[str, tuple[NonNegativeInt, ...]] = Field(default_factory=dict)
    num_halvings: int = Field(DEFAULT_NUM_HALVINGS, ge=1, le=12, strict=True)
    lora_targets: Optional[tuple[tuple[str, ...], ...]] = Field(None, min_length=1)
    layer_mode: Literal["flags", "sizes"] = "flags"
    fixed: dict[str, Any] = Field(default_factory=dict)

    @field_validator("modules")
    @classmethod
    def _unique(cls, modules: tuple[str, ...]) -> tuple[str, ...]:
        if not modules or len(set(modules)) != len(modules):
            raise ValueError(f"must list one or more distinct modules of {list(MODULE_FIELDS)}, got {list(modules)}")
        return modules

    @field_validator("lora_targets")
    @classmethod
    def _target_sets(cls, sets: Optional[tuple[tuple[str, ...], ...]]) -> Optional[tuple[tuple[str, ...], ...]]:
        if sets is not None and not all(sets):
            raise ValueError("each target set must name at least one projection, e.g. [[query, value]]")
        return sets

    @field_validator("fixed")
    @classmethod
    def _not_searched(cls, fixed: dict[str, Any]) -> dict[str, Any]:
        forbidden = set(MODULE_FIELDS.values()) | {"layers_to_transform", "target_modules", "peft_type", "task_type"}
        clash = sorted(set(fixed) & forbidden)
        if clash:
            raise ValueError(f"cannot set searched or structural fields {clash}")
        return fixed

    @model_validator(mode="after")
    def _sizes_of_searched_modules(self) -> "SpaceSpec":
        for name, options in self.sizes.items():
            if name not in self.modules:
                raise ValueError(f"recipe field `space.sizes` names {name!r}, which is not in `space.modules` {list(self.modules)}")
            if not options or max(options) == 0:
                raise ValueError(f"recipe field `space.sizes.{name}` needs at least one positive size, got {list(options)}")
        return self


def default_sizes(module: str, hidden_size: int, num_halvings: int = DEFAULT_NUM_HALVINGS, preset: str | None = None) -> tuple[int, ...]:
    """The size options of `module` when the recipe gives none (see `SpaceSpec`); LoRA gets small ranks."""
    if module == "lora":
        return (0, 2, 4, 8, 16)
    halvings = range(0, 11) if preset == "autopeft" else range(1, num_halvings + 1)
    return (0, *sorted({hidden_size // 2**k for k in halvings if hidden_size // 2**k >= 1}))


class SearchSpace:
    """Maps pymoo mixed variables to `MixedPetConfig` and back for one model architecture."""

    def __init__(self, model_config: Any, spec: SpaceSpec | None = None, task_type: str | None = "SEQ_CLS") -> None:
        self.model_config = model_config
        self.spec = spec or SpaceSpec()
        self.task_type = task_type
        self.arch = spec_for(model_config)
        self.dims = dims_for(model_config)
        self.num_layers = self.dims.num_layers
        self.size_options: dict[str, tuple[int, ...]] = {}
        for module in self.spec.modules:
            options = self.spec.sizes.get(module) or default_sizes(
                module, self.dims.hidden_size, self.spec.num_halvings, self.spec.preset
            )
            self.size_options[module] = tuple(sorted(set(options)))
        self.target_options: tuple[str, ...] = ()
        if "lora" in self.spec.modules:
            sets = self.spec.lora_targets or (tuple(self.arch.default_lora_targets),)
            self.target_options = tuple(",".join(sorted(set(s))) for s in sets)
            for option in self.target_options:
                self.arch.resolve_lora_targets(option.split(","))  # raises naming the unknown projection
        self.fixed_values: dict[str, Any] = {}
        self.variables: dict[str, Variable] = self._build_variables()
        if not self.variables:
            raise ValueError("The search space has no free variable: give some module more than one size option.")

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, spec: SpaceSpec | None = None, task_type: str | None = "SEQ_CLS"):
        """Build the space from a model's config only (no weights are loaded)."""
        from transformers import AutoConfig

        return cls(AutoConfig.from_pretrained(model_name_or_path), spec, task_type)

    # -- variables ------------------------------------------------------------------------------------------------
    def _size_variable_names(self, module: str) -> list[str]:
        field_name = MODULE_FIELDS[module]
        if self.spec.layer_mode == "sizes":
            return [f"{field_name}.{layer}" for layer in range(self.num_layers)]
        return [field_name]

    def _build_variables(self) -> dict[str, Variable]:
        variables: dict[str, Variable] = {}

        def add_choice(name: str, options: tuple) -> None:
            if len(options) == 1:  # nothing to choose: hold it fixed, keep it out of the genome
                self.fixed_values[name] = options[0]
            else:
                variables[name] = Choice(options=list(options))

        for module in self.spec.modules:
            for name in self._size_variable_names(module):
                add_choice(name, self.size_options[module])
        if self.target_options:
            add_choice("lora_targets", self.target_options)
        if self.spec.layer_mode == "flags":
            for layer in range(self.num_layers):
                variables[f"layer_{layer}"] = Binary()
        return variables

    @property
    def names(self) -> list[str]:
        return list(self.variables)

    # -- points ---------------------------------------------------------------------------------------------------
    def canonical(self, x: Mapping[str, Any]) -> dict[str, Any]:
        """`x` with plain Python values (numpy scalars from pymoo become int/bool/str), in variable order."""
        missing = [name for name in self.variables if name not in x]
        extra = [name for name in x if name not in self.variables]
        if missing or extra:
            raise KeyError(f"Point does not match the space: missing {missing}, unexpected {extra}.")
        out: dict[str, Any] = {}
        for name, variable in self.variables.items():
            value = x[name]
            if isinstance(variable, Binary):
                out[name] = bool(value)
            elif name == "lora_targets":
                out[name] = str(value)
            else:
                out[name] = int(value)
        return out

    def key(self, x: Mapping[str, Any]) -> str:
        """A stable string identity of a point (for the journal)."""
        return json.dumps(self.canonical(x), sort_keys=True, separators=(",", ":"))

    def _value(self, x: Mapping[str, Any], name: str) -> Any:
        return x[name] if name in self.variables else self.fixed_values[name]

    def _layer_sizes(self, x: Mapping[str, Any], module: str) -> list[int]:
        """Size of `module` in each layer, after the insertion flags."""
        field_name = MODULE_FIELDS[module]
        if self.spec.layer_mode == "sizes":
            return [int(self._value(x, f"{field_name}.{layer}")) for layer in range(self.num_layers)]
        size = int(self._value(x, field_name))
        return [size if bool(x[f"layer_{layer}"]) else 0 for layer in range(self.num_layers)]

    def selected_layers(self, x: Mapping[str, Any]) -> list[int]:
        if self.spec.layer_mode == "flags":
            return [layer for layer in range(self.num_layers) if bool(x[f"layer_{layer}"])]
        return list(range(self.num_layers))

    def is_valid(self, x: Mapping[str, Any]) -> bool:
        return any(size > 0 for module in self.spec.modules for size in self._layer_sizes(x, module))

    def repair(self, x: Mapping[str, Any]) -> dict[str, Any]:
        """Deterministically turn an invalid point into a valid one (see the module docstring); valid points pass."""
        x = self.canonical(x)
        if self.spec.layer_mode == "flags" and not self.selected_layers(x):
            for layer in range(self.num_layers):
                x[f"layer_{layer}"] = True
        if not self.is_valid(x):
            module = next(m for m in self.spec.modules if any(n in self.variables for n in self._size_variable_names(m)))
            smallest = min(s for s in self.size_options[module] if s > 0)
            for name in self._size_variable_names(module):
                x[name] = smallest
        return x

    def decode(self, x: Mapping[str, Any]) -> MixedPetConfig:
        """The `MixedPetConfig` of point `x`; raises `InvalidPointError` for an unrepaired invalid point."""
        x = self.canonical(x)
        if not self.is_valid(x):
            raise InvalidPointError(
                f"Point {x} selects no layer or sets every module size to 0; call `SearchSpace.repair` first."
            )
        kwargs: dict[str, Any] = dict(self.spec.fixed)
        if self.spec.layer_mode == "flags":
            for module in self.spec.modules:
                kwargs[MODULE_FIELDS[module]] = int(self._value(x, MODULE_FIELDS[module]))
            layers = self.selected_layers(x)
            kwargs["layers_to_transform"] = None if len(layers) == self.num_layers else layers
        else:
            for module in self.spec.modules:
                sizes = self._layer_sizes(x, module)
                if len(set(sizes)) == 1:
                    kwargs[MODULE_FIELDS[module]] = sizes[0]
                else:
                    kwargs[MODULE_FIELDS[module]] = {layer: s for layer, s in enumerate(sizes) if s > 0}
        if "lora" in self.spec.modules and _positive(kwargs["lora_rank"]):
            kwargs["target_modules"] = str(self._value(x, "lora_targets")).split(",")
        return MixedPetConfig(task_type=self.task_type, **kwargs)

    def encode(self, config: MixedPetConfig) -> dict[str, Any]:
        """The point of `config`; raises `ValueError` if the space cannot express it (the message says why)."""
        x: dict[str, Any] = {}
        searched = {MODULE_FIELDS[m] for m in self.spec.modules}
        for field_name in MODULE_FIELDS.values():
            if field_name not in searched and _positive(getattr(config, field_name)):
                raise ValueError(f"`{field_name}` is set but the space does not search it (space.modules).")
        layers = list(range(self.num_layers)) if config.layers_to_transform is None else list(config.layers_to_transform)
        for module in self.spec.modules:
            field_name = MODULE_FIELDS[module]
            value = getattr(config, field_name)
            per_layer = [config.size(field_name, layer) for layer in range(self.num_layers)]
            if self.spec.layer_mode == "flags":
                if isinstance(value, dict):
                    positive = {s for s in per_layer if s > 0}
                    if len(positive) > 1:
                        raise ValueError(f"`{field_name}` varies per layer; use `space.layer_mode: sizes`.")
                    value = positive.pop() if positive else 0
                names_values = [(field_name, value)]
            else:
                names_values = [(f"{field_name}.{layer}", per_layer[layer]) for layer in range(self.num_layers)]
            for name, size in names_values:
                if size not in self.size_options[module]:
                    raise ValueError(f"`{field_name}` = {size} is not an option of the space {list(self.size_options[module])}.")
                if name in self.variables:
                    x[name] = int(size)
                elif size != self.fixed_values[name]:
                    raise ValueError(f"`{name}` is fixed to {self.fixed_values[name]} in this space, got {size}.")
        if "lora_targets" in self.variables and not _positive(config.lora_rank):
            x["lora_targets"] = self.target_options[0]  # LoRA off: the target set does not matter
        elif "lora_targets" in self.variables:
            targets = ",".join(sorted(config.target_modules or self.arch.default_lora_targets))
            if targets not in self.target_options:
                raise ValueError(f"`target_modules` {targets!r} is not an option of the space {list(self.target_options)}.")
            x["lora_targets"] = targets
        if self.spec.layer_mode == "flags":
            for layer in range(self.num_layers):
                x[f"layer_{layer}"] = layer in layers
        return self.canonical(x)

    # -- cost -----------------------------------------------------------------------------------------------------
    def cost(self, x_or_config: Mapping[str, Any] | MixedPetConfig) -> int:
        """Analytic trainable PET parameters (equals the real count after `get_peft_model`)."""
        config = x_or_config if isinstance(x_or_config, MixedPetConfig) else self.decode(x_or_config)
        return count_trainable_parameters(config, self.model_config)

    def largest_point(self) -> dict[str, Any]:
        """Every layer selected, every size at its maximum, the costliest LoRA target set."""
        x: dict[str, Any] = {}
        for name, variable in self.variables.items():
            if isinstance(variable, Binary):
                x[name] = True
            elif name != "lora_targets":
                x[name] = max(variable.options)
        if "lora_targets" in self.variables:
            x["lora_targets"] = max(self.target_options, key=lambda t: self.cost({**x, "lora_targets": t}))
        return self.canonical(x)

    def max_cost(self) -> int:
        return self.cost(self.largest_point())

    # -- the sandwich rule's sub-configurations (super-PET training, `training.sandwich`) ------------------------
    def smallest(self) -> dict[str, Any]:
        """The narrowest slice of every block: each searched module at its smallest positive size in every layer,
        the cheapest LoRA target set. Not the cheapest point (one tiny block in one layer): the sandwich rule's
        smallest trains the units every slice shares."""
        x: dict[str, Any] = {}
        for name, variable in self.variables.items():
            if isinstance(variable, Binary):
                x[name] = True
            elif name != "lora_targets":
                x[name] = min((s for s in variable.options if s > 0), default=0)
        if "lora_targets" in self.variables:
            x["lora_targets"] = min(self.target_options, key=lambda t: self.cost(self.repair({**x, "lora_targets": t})))
        return self.repair(x)

    def sample(self, rng: Any) -> dict[str, Any]:
        """A uniformly random point (each variable drawn independently from a `numpy` generator), repaired."""
        x: dict[str, Any] = {}
        for name, variable in self.variables.items():
            if isinstance(variable, Binary):
                x[name] = bool(rng.integers(0, 2))
            else:
                x[name] = variable.options[int(rng.integers(0, len(variable.options)))]
        return self.repair(x)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary, saved with the front."""
        return {
            "modules": list(self.spec.modules),
            "size_options": {m: list(s) for m, s in self.size_options.items()},
            "lora_targets": list(self.target_options),
            "layer_mode": self.spec.layer_mode,
            "num_layers": self.num_layers,
            "num_variables": len(self.variables),
            "max_trainable_parameters": self.max_cost(),
        }


def _positive(value: Any) -> bool:
    return value > 0 if isinstance(value, int) else any(v > 0 for v in value.values())
