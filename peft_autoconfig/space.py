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
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from pymoo.core.variable import Binary, Choice, Variable

from .architectures import dims_for, spec_for
from .tuners.plan import count_trainable_parameters
from .tuners.mixed import MixedPetConfig

MODULE_FIELDS: dict[str, str] = {
    "serial_adapter": "serial_adapter_size",
    "parallel_adapter": "parallel_adapter_size",
    "prefix": "prefix_length",
    "lora": "lora_rank",
}
"""Module name in a recipe -> the `MixedPetConfig` size field it sets."""

DEFAULT_MODULES: tuple[str, ...] = ("serial_adapter", "parallel_adapter", "prefix")
LAYER_MODES: tuple[str, ...] = ("flags", "sizes")
DEFAULT_NUM_HALVINGS = 7


class InvalidPointError(ValueError):
    """A point of the space that maps to no valid config (no layer selected or every module off)."""


@dataclass(frozen=True)
class SpaceSpec:
    """What a recipe says about the space (the `space:` block). Sizes not given default from the model.

    Args:
        modules: which blocks may be searched, a subset of `MODULE_FIELDS` ("serial_adapter", "parallel_adapter",
            "prefix", "lora").
        sizes: per module, the list of allowed sizes (0 = off). Default: `[0] + [hidden // 2**k for k in
            1..num_halvings]` for adapters and prefix (AutoPEFT), `[0, 2, 4, 8, 16]` for LoRA.
        num_halvings: how many halvings of the hidden size the default size lists contain.
        lora_targets: LoRA target sets to choose from; default: the architecture's query/value projections.
        layer_mode: "flags" (global sizes + one insertion flag per layer) or "sizes" (one size per module and layer).
        fixed: other `MixedPetConfig` fields held fixed (e.g. `adapter_non_linearity`, `lora_alpha`).
    """

    modules: tuple[str, ...] = DEFAULT_MODULES
    sizes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    num_halvings: int = DEFAULT_NUM_HALVINGS
    lora_targets: tuple[tuple[str, ...], ...] | None = None
    layer_mode: Literal["flags", "sizes"] = "flags"
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [m for m in self.modules if m not in MODULE_FIELDS]
        if unknown or not self.modules:
            raise ValueError(f"`space.modules` must be a non-empty subset of {list(MODULE_FIELDS)}, got {list(self.modules)}.")
        if len(set(self.modules)) != len(self.modules):
            raise ValueError(f"`space.modules` has duplicates: {list(self.modules)}.")
        for name, options in self.sizes.items():
            if name not in self.modules:
                raise ValueError(f"`space.sizes` names {name!r}, which is not in `space.modules` {list(self.modules)}.")
            if not options or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in options):
                raise ValueError(f"`space.sizes.{name}` must be a non-empty list of ints >= 0, got {list(options)}.")
        if self.layer_mode not in LAYER_MODES:
            raise ValueError(f"`space.layer_mode` must be one of {list(LAYER_MODES)}, got {self.layer_mode!r}.")
        if not isinstance(self.num_halvings, int) or not 1 <= self.num_halvings <= 12:
            raise ValueError(f"`space.num_halvings` must be an int in [1, 12], got {self.num_halvings!r}.")
        forbidden = set(MODULE_FIELDS.values()) | {"layers_to_transform", "target_modules", "peft_type", "task_type"}
        clash = sorted(set(self.fixed) & forbidden)
        if clash:
            raise ValueError(f"`space.fixed` cannot set searched or structural fields {clash}.")


def default_sizes(module: str, hidden_size: int, num_halvings: int = DEFAULT_NUM_HALVINGS) -> tuple[int, ...]:
    """AutoPEFT's size list `[0] + hidden/2^k` (k = 1..num_halvings, sizes >= 1); LoRA gets small ranks."""
    if module == "lora":
        return (0, 2, 4, 8, 16)
    sizes = sorted({hidden_size // 2**k for k in range(1, num_halvings + 1) if hidden_size // 2**k >= 1})
    return (0, *sizes)


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
            options = self.spec.sizes.get(module) or default_sizes(module, self.dims.hidden_size, self.spec.num_halvings)
            self.size_options[module] = tuple(sorted(set(int(s) for s in options)))
            if max(self.size_options[module]) == 0:
                raise ValueError(f"`space.sizes.{module}` has no positive size: {list(options)}.")
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
