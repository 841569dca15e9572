"""Sub-networks of a transformer backbone and the spaces of them that the pruning search explores.

A `SubNetwork` keeps some layers of the model and, in each kept layer, some attention heads and FFN units (by
index into the original model). The search spaces are Klein et al.'s granularities (`plm_pruning`):

- ``layer``: keep or drop each layer (one binary variable per layer), full width;
- ``small``: one global setting: the first `n_layers` layers, the first `n_heads` heads and `n_units` units in each;
- ``medium``: `n_layers` plus the number of heads and of units per layer (the first ones of each layer are kept);
- ``large``: one binary variable per head and per layer, plus the number of units per layer.

Where the modules of each family live is data (`FAMILIES`), like the PET blocks in `architectures.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np

from ..architectures import UnsupportedModelError

Granularity = Literal["layer", "small", "medium", "large"]
GRANULARITIES: tuple[str, ...] = ("layer", "small", "medium", "large")


@dataclass(frozen=True)
class FamilySpec:
    """Where a family's blocks and their prunable linear layers are (dotted paths) and its config field names."""

    layers: str
    """Path of the `ModuleList` of blocks, from `model.base_model`."""
    query: str
    key: str
    value: str
    attention_output: str
    """The projection whose input is the concatenated heads: masking its input columns removes heads."""
    intermediate: tuple[str, ...]
    """The FFN up projections (Llama: gate and up): their output rows are the units."""
    ffn_output: str
    """The FFN down projection: its input columns are the units."""
    head_dim_in_config: bool = False
    """The config has `head_dim`, so a smaller head count keeps the head size: heads can be sliced on export."""


_ENCODER = FamilySpec(
    layers="encoder.layer", query="attention.self.query", key="attention.self.key", value="attention.self.value",
    attention_output="attention.output.dense", intermediate=("intermediate.dense",), ffn_output="output.dense",
)
_LLAMA = FamilySpec(
    layers="layers", query="self_attn.q_proj", key="self_attn.k_proj", value="self_attn.v_proj",
    attention_output="self_attn.o_proj", intermediate=("mlp.gate_proj", "mlp.up_proj"), ffn_output="mlp.down_proj",
    head_dim_in_config=True,
)
FAMILIES: dict[str, FamilySpec] = {"bert": _ENCODER, "roberta": _ENCODER, "llama": _LLAMA}
"""Supported `config.model_type`s (GPT-2's fused `c_attn` is not supported yet; see docs/backbone.md)."""


def family_for(config: Any) -> FamilySpec:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"`model.config.model_type` {model_type!r} is not supported by prune-model; allowed: {sorted(FAMILIES)}."
        )
    return FAMILIES[model_type]


@dataclass(frozen=True)
class Dims:
    """The sizes of the full model that a sub-network indexes into."""

    num_layers: int
    num_heads: int
    intermediate_size: int
    hidden_size: int
    head_dim: int
    num_key_value_heads: int

    @classmethod
    def from_config(cls, config: Any) -> "Dims":
        family_for(config)
        heads = config.num_attention_heads
        return cls(
            config.num_hidden_layers, heads, config.intermediate_size, config.hidden_size,
            getattr(config, "head_dim", None) or config.hidden_size // heads,
            getattr(config, "num_key_value_heads", None) or heads,
        )


@dataclass(frozen=True)
class SubNetwork:
    """Kept layers (original indices, increasing) and, per kept layer, its kept heads and FFN units."""

    layers: tuple[int, ...]
    heads: tuple[tuple[int, ...], ...]
    units: tuple[tuple[int, ...], ...]

    @classmethod
    def full(cls, dims: Dims) -> "SubNetwork":
        return cls.uniform(dims, dims.num_layers, dims.num_heads, dims.intermediate_size)

    @classmethod
    def uniform(cls, dims: Dims, n_layers: int, n_heads: int, n_units: int) -> "SubNetwork":
        """The first `n_layers` layers, each with its first `n_heads` heads and `n_units` units."""
        return cls(tuple(range(n_layers)), (tuple(range(n_heads)),) * n_layers, (tuple(range(n_units)),) * n_layers)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "heads": [list(h) for h in self.heads], "units": [list(u) for u in self.units]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SubNetwork":
        return cls(tuple(data["layers"]), tuple(map(tuple, data["heads"])), tuple(map(tuple, data["units"])))

    def describe(self) -> str:
        """Short text: layers kept, heads per layer, units per layer."""
        return (f"layers={','.join(map(str, self.layers))} heads={'/'.join(str(len(h)) for h in self.heads)} "
                f"units={'/'.join(str(len(u)) for u in self.units)}")

    def validate(self, dims: Dims) -> "SubNetwork":
        """Raise `ValueError` naming the field unless this sub-network fits in a model of `dims`; return self."""
        if not self.layers:
            raise ValueError("`subnetwork.layers` is empty; a sub-network keeps at least one layer.")
        if len(self.heads) != len(self.layers) or len(self.units) != len(self.layers):
            raise ValueError(f"`subnetwork.heads` and `subnetwork.units` need one entry per kept layer "
                             f"({len(self.layers)}), got {len(self.heads)} and {len(self.units)}.")
        _check_indices("subnetwork.layers", self.layers, dims.num_layers)
        for i, (heads, units) in enumerate(zip(self.heads, self.units)):
            if not heads:
                raise ValueError(f"`subnetwork.heads[{i}]` is empty: removing every head of a layer is not allowed "
                                 "(drop the layer instead).")
            if not units:
                raise ValueError(f"`subnetwork.units[{i}]` is empty: removing every FFN unit of a layer is not allowed.")
            _check_indices(f"subnetwork.heads[{i}]", heads, dims.num_heads)
            _check_indices(f"subnetwork.units[{i}]", units, dims.intermediate_size)
        return self


def _check_indices(field: str, values: Sequence[int], size: int) -> None:
    if list(values) != sorted(set(values)):
        raise ValueError(f"`{field}` must be strictly increasing indices, got {list(values)}.")
    if values[0] < 0 or values[-1] >= size:
        raise ValueError(f"`{field}` has index {values[-1] if values[-1] >= size else values[0]} outside 0..{size - 1} "
                         "(the sub-network is larger than the model).")


@dataclass(frozen=True)
class BackboneSpace:
    """A search space of sub-networks of one model (`dims`) at one granularity, with lower bounds."""

    dims: Dims
    granularity: Granularity = "medium"
    min_layers: int = 1
    min_heads: int = 1
    min_units: int = 1

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"`space.granularity` {self.granularity!r} is not allowed; allowed: {list(GRANULARITIES)}.")
        for name, top in (("min_layers", self.dims.num_layers), ("min_heads", self.dims.num_heads),
                          ("min_units", self.dims.intermediate_size)):
            value = getattr(self, name)
            if not 1 <= value <= top:
                raise ValueError(f"`space.{name}` must be in 1..{top} for this model (0 would remove every one), "
                                 f"got {value}.")

    # -- pymoo variables ----------------------------------------------------------------------------------------
    @property
    def variables(self) -> dict[str, Any]:
        from pymoo.core.variable import Binary, Integer

        d, out = self.dims, {}
        if self.granularity == "layer":
            return {f"layer_{i}": Binary() for i in range(d.num_layers)}
        out["n_layers"] = Integer(bounds=(self.min_layers, d.num_layers))
        if self.granularity == "small":
            out["n_heads"] = Integer(bounds=(self.min_heads, d.num_heads))
            out["n_units"] = Integer(bounds=(self.min_units, d.intermediate_size))
            return out
        for i in range(d.num_layers):
            if self.granularity == "medium":
                out[f"heads_{i}"] = Integer(bounds=(self.min_heads, d.num_heads))
            else:
                out.update({f"head_{i}_{h}": Binary() for h in range(d.num_heads)})
            out[f"units_{i}"] = Integer(bounds=(self.min_units, d.intermediate_size))
        return out

    def repair(self, x: dict[str, Any]) -> dict[str, Any]:
        """A valid, JSON-plain point: enough layers and heads kept (the first missing ones are switched on)."""
        x = {k: (bool(v) if isinstance(v, (bool, np.bool_)) else int(v)) for k, v in x.items()}
        d = self.dims
        if self.granularity == "layer":
            for i in range(d.num_layers):
                if sum(x[f"layer_{j}"] for j in range(d.num_layers)) >= self.min_layers:
                    break
                x[f"layer_{i}"] = True
        elif self.granularity == "large":
            for i in range(d.num_layers):
                for h in range(d.num_heads):
                    if sum(x[f"head_{i}_{g}"] for g in range(d.num_heads)) >= self.min_heads:
                        break
                    x[f"head_{i}_{h}"] = True
        return x

    def to_subnetwork(self, x: dict[str, Any]) -> SubNetwork:
        d = self.dims
        if self.granularity == "layer":
            layers = tuple(i for i in range(d.num_layers) if x[f"layer_{i}"])
            return SubNetwork(layers, (tuple(range(d.num_heads)),) * len(layers),
                              (tuple(range(d.intermediate_size)),) * len(layers)).validate(d)
        if self.granularity == "small":
            return SubNetwork.uniform(d, x["n_layers"], x["n_heads"], x["n_units"]).validate(d)
        layers = tuple(range(x["n_layers"]))
        if self.granularity == "medium":
            heads = tuple(tuple(range(x[f"heads_{i}"])) for i in layers)
        else:
            heads = tuple(tuple(h for h in range(d.num_heads) if x[f"head_{i}_{h}"]) for i in layers)
        units = tuple(tuple(range(x[f"units_{i}"])) for i in layers)
        return SubNetwork(layers, heads, units).validate(d)

    # -- the sandwich rule's sub-networks -----------------------------------------------------------------------
    def largest(self) -> SubNetwork:
        return SubNetwork.full(self.dims)

    def smallest(self) -> SubNetwork:
        return SubNetwork.uniform(self.dims, self.min_layers, self.min_heads, self.min_units)

    def sample(self, rng: np.random.Generator) -> SubNetwork:
        """A uniformly random point of the space (each variable drawn independently), repaired."""
        from pymoo.core.variable import Binary

        x = {}
        for name, var in self.variables.items():
            if isinstance(var, Binary):
                x[name] = bool(rng.integers(0, 2))
            else:
                x[name] = int(rng.integers(var.bounds[0], var.bounds[1] + 1))
        return self.to_subnetwork(self.repair(x))
