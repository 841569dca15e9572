"""`MixedPetConfig`: serial adapter + parallel adapter + LoRA + prefix, each sized per layer (AutoPEFT-style)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from peft.config import PeftConfig
from peft.utils.peft_types import PeftType

from ...architectures import ModelDims
from ...peft_types import MIXED_PET, add_peft_type
from ..blocks import NON_LINEARITIES

LayerSizes = Union[int, dict[int, int]]

SIZE_FIELDS: tuple[str, ...] = ("serial_adapter_size", "parallel_adapter_size", "lora_rank", "prefix_length", "bias_tuning")
"""The per-layer size fields; a size of 0 means the block is absent in that layer (`bias_tuning` is 0 or 1)."""

FLAG_FIELDS: tuple[str, ...] = ("bias_tuning",)
"""Size fields whose per-layer value is an on/off flag (0 or 1)."""

SERIAL_ADAPTER_PLACEMENTS: tuple[str, ...] = ("houlsby", "pfeiffer")


def normalize_layer_sizes(name: str, value: object) -> LayerSizes:
    """Check a size field (an int for all layers, or a mapping layer index -> size) and normalise mapping keys.

    JSON turns integer keys into strings, so `{"0": 8}` is accepted and becomes `{0: 8}`.
    """
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int or a mapping of layer index to int, got {value!r}.")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0 (0 = absent), got {value}.")
        return value
    if isinstance(value, dict):
        sizes: dict[int, int] = {}
        for key, size in value.items():
            try:
                layer = int(key)
            except (TypeError, ValueError):
                raise TypeError(f"`{name}` keys must be layer indices (int), got {key!r}.") from None
            if layer < 0:
                raise ValueError(f"`{name}` layer indices must be >= 0, got {layer}.")
            if isinstance(size, bool) or not isinstance(size, int):
                raise TypeError(f"`{name}[{layer}]` must be an int, got {size!r}.")
            if size < 0:
                raise ValueError(f"`{name}[{layer}]` must be >= 0 (0 = absent), got {size}.")
            sizes[layer] = size
        return dict(sorted(sizes.items()))
    raise TypeError(f"`{name}` must be an int or a mapping of layer index to int, got {type(value).__name__}.")


def size_at(sizes: LayerSizes, layer: int) -> int:
    """The size of a block in `layer` (a mapping without the layer means absent)."""
    if isinstance(sizes, int):
        return sizes
    return sizes.get(layer, 0)


@dataclass
class MixedPetConfig(PeftConfig):
    """Configuration of the mixed composite PET method (`PeftType.MIXED_PET`).

    Each block is present in a layer when the layer is selected (`layers_to_transform`) and the block's size there
    is positive. Sizes are one int for every selected layer or a mapping `{layer_index: size}` (missing layers: 0).

    Args:
        serial_adapter_size (`int` or `dict[int, int]`):
            Bottleneck dimension of the serial adapter applied to the feed-forward output (0 = absent).
        serial_adapter_placement (`Literal["houlsby", "pfeiffer"]`):
            Where the serial adapter sits. "houlsby" (default; wave 1's placement): on the feed-forward output
            projection's output, before the residual sum and LayerNorm. "pfeiffer" (AutoPEFT's and UniPELT's choice
            for BERT-style encoders, AdapterHub's `SeqBnConfig`): it reads `LN(h + x)`, the layer's output LayerNorm
            result, and the layer returns `LN(h + x + adapter(LN(h + x)))` with the same LayerNorm; only for post-LN
            encoders (pre-LN decoders are refused with an error). Same parameter count in both.
        parallel_adapter_size (`int` or `dict[int, int]`):
            Bottleneck dimension of the parallel adapter beside the feed-forward block (0 = absent).
        parallel_adapter_scaling (`float`):
            Factor on the parallel adapter's output (He et al. use 4.0).
        adapter_non_linearity (`Literal["relu", "gelu", "tanh", "silu"]`):
            Non-linearity inside both bottleneck adapters.
        lora_rank (`int` or `dict[int, int]`):
            LoRA rank on every module of `target_modules` (0 = absent).
        lora_alpha (`float`, *optional*):
            LoRA scaling numerator. `None` (default) scales the update by 1.0 at every rank (alpha = rank), so that
            searching the rank does not also change the update's scale (and the learning rate that suits it). A number
            scales by `lora_alpha / rank`, or `lora_alpha / sqrt(rank)` with `use_rslora`.
        use_rslora (`bool`):
            Rank-stabilised LoRA (Kalajdzievski, 2023): scale by `lora_alpha / sqrt(rank)`; needs `lora_alpha`.
        lora_dropout (`float`):
            Dropout on the LoRA input, in [0, 1).
        target_modules (`list[str]`, *optional*):
            Projections that get LoRA, by name ("query", "q_proj", "mlp.c_proj"). Default: the architecture's query
            and value projections.
        prefix_length (`int` or `dict[int, int]`):
            Number of trainable key/value prefix vectors per attention layer (0 = absent).
        prefix_projection_size (`int`):
            0 trains the prefix keys/values directly (flat). A positive value is the hidden size of a per-layer MLP
            `Linear(hidden, size) -> tanh -> Linear(size, 2 * kv_heads * head_dim)` over a learned `(length, hidden)`
            input that produces them while training (Li & Liang; UniPELT uses 512). It is folded into flat keys/values
            when saved, so the saved adapter and `count_trainable_parameters` keep the flat size;
            `count_training_parameters` gives the size trained.
        prefix_init_std (`float`):
            Standard deviation of the initial prefix keys/values, in both modes (the MLP's output layer is rescaled
            to it). Must be positive.
        bias_tuning (`int` or `dict[int, int]`):
            BitFit (Ben Zaken et al., 2022): 1 tunes the biases of `bias_targets` in that layer, 0 = absent. Each
            bias is a trainable delta of the module's output size added to the module's output (the base bias is
            never changed), saved with the adapter and merged exactly by `merge_and_unload` (`bias += delta`).
        bias_targets (`list[str]`, *optional*):
            Modules whose bias is tuned, by name as for `target_modules` ("query", "key", "value",
            "attention.output.dense", "intermediate.dense", "output.dense", "LayerNorm" for both LayerNorms of a
            BERT layer). Default: every projection and bias-carrying LayerNorm of the layer (BitFit proper).
        weight_masks (`str`, *optional*):
            Unstructured pruning: a safetensors file of bool masks, one per PET weight it prunes, keyed by the
            weight's path in the transformers model without the adapter name (`bert.encoder.layer.0.attention.self.
            query.mixed_pet_lora.A.weight`). `get_peft_model` zeroes the masked entries and keeps them at zero while
            training; the masks are saved in adapter_model.safetensors, so a saved adapter loads without the file;
            `count_trainable_parameters` counts the non-zero weights. Needs a flat prefix.
        layers_to_transform (`list[int]`, *optional*):
            Layer indices that may receive blocks. Default: all layers.
        modules_to_save (`list[str]`, *optional*):
            Modules besides the PET blocks to train and save, e.g. a classifier head.
    """

    serial_adapter_size: LayerSizes = field(
        default=0, metadata={"help": "Serial adapter bottleneck size: an int or {layer: size}; 0 = absent."}
    )
    serial_adapter_placement: Literal["houlsby", "pfeiffer"] = field(
        default="houlsby",
        metadata={
            "help": "Serial adapter placement, one of 'houlsby' (after the feed-forward output projection, before the "
            "residual sum and LayerNorm; default, as saved adapters without this field) or 'pfeiffer' (reads the "
            "output LayerNorm's result LN(h + x); the layer returns LN(h + x + adapter(LN(h + x))); post-LN encoders "
            "such as BERT/RoBERTa only)."
        },
    )
    parallel_adapter_size: LayerSizes = field(
        default=0, metadata={"help": "Parallel adapter bottleneck size: an int or {layer: size}; 0 = absent."}
    )
    parallel_adapter_scaling: float = field(default=4.0, metadata={"help": "Scaling of the parallel adapter output."})
    adapter_non_linearity: Literal["relu", "gelu", "tanh", "silu"] = field(
        default="relu", metadata={"help": "Adapter non-linearity, one of 'relu', 'gelu', 'tanh', 'silu'."}
    )
    lora_rank: LayerSizes = field(default=0, metadata={"help": "LoRA rank: an int or {layer: rank}; 0 = absent."})
    lora_alpha: Optional[float] = field(
        default=None,
        metadata={
            "help": "LoRA alpha. None (default): scaling 1.0 at every rank (alpha = rank), so the searched rank does "
            "not change the update's scale. A number: the update is scaled by alpha / rank (alpha / sqrt(rank) with "
            "use_rslora)."
        },
    )
    use_rslora: bool = field(
        default=False,
        metadata={"help": "Rank-stabilised LoRA: scale by lora_alpha / sqrt(rank) instead of lora_alpha / rank."},
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Projections that get LoRA ('query', 'q_proj', ...); default: query and value."},
    )
    prefix_length: LayerSizes = field(
        default=0, metadata={"help": "Prefix length per attention layer: an int or {layer: length}; 0 = absent."}
    )
    prefix_projection_size: int = field(
        default=0,
        metadata={"help": "Hidden size of the prefix MLP used while training (folded on save); 0 = flat prefix."},
    )
    prefix_init_std: float = field(
        default=0.02, metadata={"help": "Std of the initial prefix keys/values (> 0), flat or MLP."}
    )
    bias_tuning: LayerSizes = field(
        default=0,
        metadata={"help": "BitFit per layer: 1 tunes the biases of `bias_targets` there (a delta), 0 = absent."},
    )
    bias_targets: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Modules whose bias is tuned ('query', 'output.dense', 'LayerNorm', ...); default: all."},
    )
    weight_masks: Optional[str] = field(
        default=None,
        metadata={"help": "Safetensors file of bool masks per PET weight (unstructured pruning); saved with the adapter."},
    )
    layers_to_transform: Optional[list[int]] = field(
        default=None, metadata={"help": "Layer indices that may receive blocks; default all layers."}
    )
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Extra modules to train and save, e.g. the classification head."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = self._peft_type()
        for name in SIZE_FIELDS:
            setattr(self, name, normalize_layer_sizes(name, getattr(self, name)))
        for name in FLAG_FIELDS:
            value = getattr(self, name)
            if any(v not in (0, 1) for v in ([value] if isinstance(value, int) else value.values())):
                raise ValueError(f"`{name}` is an on/off flag per layer: 0 or 1 (or {{layer: 0 or 1}}), got {value!r}.")
        if self.weight_masks is not None:
            if not isinstance(self.weight_masks, str) or not self.weight_masks:
                raise TypeError(f"`weight_masks` must be a path (str) to a safetensors file or None, got {self.weight_masks!r}.")
            if self.prefix_projection_size:
                raise ValueError("`weight_masks` needs a flat prefix (`prefix_projection_size`=0): the prefix MLP is not saved.")
        if isinstance(self.bias_targets, str):
            self.bias_targets = [self.bias_targets]
        if self.bias_targets is not None:
            self.bias_targets = sorted(set(self.bias_targets))
            if not self.bias_targets or not all(isinstance(t, str) and t for t in self.bias_targets):
                raise ValueError(f"`bias_targets` must be a non-empty list of names or None, got {self.bias_targets!r}.")
        if self.adapter_non_linearity not in NON_LINEARITIES:
            raise ValueError(
                f"`adapter_non_linearity` must be one of {sorted(NON_LINEARITIES)}, got {self.adapter_non_linearity!r}."
            )
        if self.serial_adapter_placement not in SERIAL_ADAPTER_PLACEMENTS:
            raise ValueError(
                f"`serial_adapter_placement` must be one of {list(SERIAL_ADAPTER_PLACEMENTS)}, "
                f"got {self.serial_adapter_placement!r}."
            )
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}.")
        if self.lora_alpha is not None and float(self.lora_alpha) <= 0:
            raise ValueError(f"`lora_alpha` must be positive or None (scaling 1.0), got {self.lora_alpha}.")
        if not isinstance(self.use_rslora, bool):
            raise TypeError(f"`use_rslora` must be a bool, got {self.use_rslora!r}.")
        if self.use_rslora and self.lora_alpha is None:
            raise ValueError("`use_rslora` scales by `lora_alpha` / sqrt(rank): set `lora_alpha` too, got None.")
        self._check_prefix_options()
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if self.target_modules is not None:
            self.target_modules = sorted(set(self.target_modules))
            if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
                raise ValueError(f"`target_modules` must be a non-empty list of names, got {self.target_modules!r}.")
        if self.layers_to_transform is not None:
            if isinstance(self.layers_to_transform, int):
                self.layers_to_transform = [self.layers_to_transform]
            layers = list(self.layers_to_transform)
            if not layers or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
                raise ValueError(
                    f"`layers_to_transform` must be a non-empty list of layer indices >= 0, got {self.layers_to_transform!r}."
                )
            self.layers_to_transform = sorted(set(layers))
        if not self.has_any_block():
            raise ValueError(
                "The config adds no block: set at least one of "
                f"{list(SIZE_FIELDS)} to a positive size (in at least one layer)."
            )

    def _peft_type(self) -> PeftType:
        return add_peft_type(MIXED_PET)

    def _check_prefix_options(self) -> None:
        size = self.prefix_projection_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"`prefix_projection_size` must be an int (0 = flat prefix, > 0 = MLP size), got {size!r}.")
        if size < 0:
            raise ValueError(f"`prefix_projection_size` must be >= 0 (0 = flat prefix, > 0 = MLP size), got {size}.")
        std = self.prefix_init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)):
            raise TypeError(f"`prefix_init_std` must be a positive float, got {std!r}.")
        if not 0 < std < float("inf"):
            raise ValueError(f"`prefix_init_std` must be a positive finite float, got {std}.")
        self.prefix_init_std = float(std)

    # -- derived facts --------------------------------------------------------------------------------------------
    def has_any_block(self) -> bool:
        return any(
            (v > 0) if isinstance(v, int) else any(s > 0 for s in v.values())
            for v in (getattr(self, name) for name in SIZE_FIELDS)
        )

    def layer_selected(self, layer: int) -> bool:
        return self.layers_to_transform is None or layer in self.layers_to_transform

    def size(self, name: str, layer: int) -> int:
        """Size of block `name` (one of `SIZE_FIELDS`) in `layer`, 0 where absent or not selected."""
        if not self.layer_selected(layer):
            return 0
        return size_at(getattr(self, name), layer)

    def block_size(self, name: str, layer: int, dims: ModelDims) -> int:
        """Size of block `name` in `layer` of a model with `dims` (subclasses may derive sizes from `dims`)."""
        return self.size(name, layer)

    def max_layer_index(self) -> int:
        """The largest layer index the config refers to (-1 if none), to check against the model."""
        indices = list(self.layers_to_transform or [])
        for name in SIZE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, dict):
                indices.extend(value)
        return max(indices, default=-1)

    def lora_scaling(self, rank: int) -> float:
        """The factor on a LoRA update of rank `rank` (see `lora_alpha` and `use_rslora`)."""
        if self.lora_alpha is None:
            return 1.0
        return float(self.lora_alpha) / (math.sqrt(rank) if self.use_rslora else rank)

    def gated(self, block: str) -> bool:
        """Whether `block` ("serial", "parallel", "lora", "prefix", "bias") has a gate. None in the mixed method."""
        return False

    @property
    def is_mergeable(self) -> bool:
        """Only a config of ungated LoRA and/or bias deltas can be merged into the base weights (a bias delta needs a
        base bias to merge into; the layer says so if it has none)."""
        others = ("serial_adapter_size", "parallel_adapter_size", "prefix_length")
        return all(_all_zero(getattr(self, n)) for n in others) and not self.gated("lora")


def _all_zero(sizes: LayerSizes) -> bool:
    return sizes == 0 if isinstance(sizes, int) else all(v == 0 for v in sizes.values())
