"""A super-PET: one mixed-composite adapter at the largest sizes whose slices are the smaller configurations.

A sub-configuration (a `MixedPetConfig`, or a point of a `SearchSpace`) runs in place, sharing the super-PET's
weights (nothing is copied):

- LoRA of rank r: the first r ranks (rows of `A`, columns of `B`), scaled as a stand-alone rank-r LoRA would be
  (`MixedPetConfig.lora_scaling(r)`: 1.0 by default at every rank, `lora_alpha / r` or `lora_alpha / sqrt(r)` when
  the sub-configuration sets `lora_alpha`/`use_rslora`);
- serial/parallel adapter of size k: the first k bottleneck units (rows of `down`, columns of `up`);
- prefix of length l: the first l key/value tokens;
- BitFit (`bias_tuning`, on/off per layer): the layer's bias deltas, or none;
- a block the sub-configuration lacks in a layer (size 0, layer not selected, LoRA target not chosen) is skipped.

Units are removed by forward hooks that zero them (LoRA: the output of `A`, times the scaling ratio; adapters: the
output of the non-linearity); while the slice is active, an absent block's `forward` is shadowed by one that returns
zeros without computing anything, and a prefix's `keys_values` by one that cuts it (instance attributes, removed
again when the slice changes). So a slice computes what the stand-alone configuration with
the sliced weights computes, and training a slice only updates (gives gradients to) the weights it uses. Which
block goes where comes from `tuners.plan.module_plans`, the same plan the tuner injects with.

Several slices can also run in **one** forward pass (`use_rows(subs, rows)`): the batch holds `rows` examples per
slice, one slice after the other, and every mask gets a batch dimension (an absent block is a zero mask for its
rows, a shorter prefix an attention bias that hides its other tokens from those rows). Each row computes exactly
what its slice computes alone; on a GPU, where a small model's step is bound by kernel launches rather than
arithmetic, the sandwich rule's students then cost about one pass instead of one each (RESULTS.md section 16).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..architectures import spec_for
from .blocks import BiasDelta, Bottleneck, LoraDelta, PrefixKV
from .layer import PetLayer, located_pet_layers
from .mixed.config import MixedPetConfig
from .plan import BlockPlan, module_plans
from ..subnetworks import InPlaceSwitch

SubConfig = Union[MixedPetConfig, Mapping[str, Any], None]
"""None (the whole super-PET), a `MixedPetConfig`, or a point of the `SearchSpace` given to `SuperPet`."""

SIZES: dict[str, tuple[str, str]] = {
    "lora": ("lora_rank", "lora_rank"),
    "serial": ("serial_size", "serial_adapter_size"),
    "parallel": ("parallel_size", "parallel_adapter_size"),
    "prefix": ("prefix_length", "prefix_length"),
    "bias": ("bias", "bias_tuning"),
}
"""Block kind -> (its `BlockPlan` field, its `MixedPetConfig` field)."""

SHARED_FIELDS: tuple[str, ...] = (
    "adapter_non_linearity", "serial_adapter_placement", "parallel_adapter_scaling", "prefix_projection_size",
)
"""Fields a slice cannot change: they decide what the shared weights compute."""


class SliceError(ValueError):
    """A sub-configuration the super-PET does not contain (a size larger than trained, another block layout)."""


class _PrefixSlice:
    """Stands in for `PrefixKV.keys_values` while a slice is active: the first `length` prefix tokens only."""

    def __init__(self, block: PrefixKV, length: int) -> None:
        self.block, self.length = block, length

    def __call__(self, batch_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, Any]:
        key, value, bias = PrefixKV.keys_values(self.block, batch_size, dtype)
        return key[..., : self.length, :], value[..., : self.length, :], bias


class _PrefixRows:
    """Stands in for `PrefixKV.keys_values` while several slices share a batch: every token, with an attention bias
    `(batch, 1, 1, length)` that hides the tokens beyond each row's own prefix length (a very negative score)."""

    def __init__(self, block: PrefixKV, lengths: torch.Tensor) -> None:
        self.block, self.lengths = block, lengths
        self._bias: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def __call__(self, batch_size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, Any]:
        key, value, _ = PrefixKV.keys_values(self.block, batch_size, dtype)
        _check_rows(self.lengths.shape[0], batch_size)
        bias = self._bias.get((dtype, key.device))
        if bias is None:  # built once per selection (scoring runs many batches through one)
            lengths = self.lengths.to(key.device)
            hidden = torch.arange(key.shape[-2], device=key.device)[None, :] >= lengths[:, None]
            bias = torch.zeros(hidden.shape, dtype=dtype, device=key.device).masked_fill(hidden, torch.finfo(dtype).min)
            bias = self._bias[(dtype, key.device)] = bias[:, None, None, :]
        return key, value, bias


class _BiasRows:
    """Stands in for a BitFit block's `forward` while several slices share a batch: the delta for the rows whose
    slice has it, zero for the others, as `(batch, 1, features)`."""

    def __init__(self, block: BiasDelta, flags: torch.Tensor) -> None:
        self.block, self.flags = block, flags

    def __call__(self) -> torch.Tensor:
        delta = self.block.delta
        return delta * self.flags.to(device=delta.device, dtype=delta.dtype)[:, None, None]


def repeat_rows(batch: Mapping[str, Any], times: int, rows: int) -> dict[str, Any]:
    """`batch` laid out for `use_rows`: every tensor whose first dimension is the batch's `rows` repeated `times`
    times along it (one copy per slice, in order); anything else as it is."""
    return {name: value.repeat(times, *([1] * (value.dim() - 1)))
            if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == rows else value
            for name, value in batch.items()}


def _row_flags(sizes: list[int], rows: int) -> torch.Tensor:
    """1.0 for the rows of the slices where a block is present (size > 0), 0.0 for the others."""
    return torch.tensor([float(size > 0) for size in sizes]).repeat_interleave(rows)


class _DeviceConstants:
    """The small constant tensors of slicing (masks, row flags, prefix lengths), built once on the model's device and
    reused: a hook that moved a CPU mask to a GPU at every forward paid a synchronising host-to-device copy per
    block, and rebuilding the masks at every selection costs a thousand small ops a step (RESULTS.md section 17)."""

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, build: Any, device: torch.device) -> torch.Tensor:
        key = (*key, device)
        tensor = self._cache.get(key)
        if tensor is None:
            if len(self._cache) >= self.MAX_ENTRIES:  # random students: keep the cache bounded
                self._cache.clear()
            tensor = self._cache[key] = build().to(device)
        return tensor

    def leading(self, size: int, keep: int, value: float, device: torch.device) -> torch.Tensor:
        """`(size,)`: `value` on the first `keep` units, 0 beyond."""
        return self.get(("leading", size, keep, value), lambda: _leading(size, keep, value), device)

    def row_flags(self, sizes: list[int], rows: int, device: torch.device) -> torch.Tensor:
        return self.get(("flags", tuple(size > 0 for size in sizes), rows), lambda: _row_flags(sizes, rows), device)

    def row_lengths(self, sizes: list[int], rows: int, device: torch.device) -> torch.Tensor:
        return self.get(("lengths", tuple(sizes), rows), lambda: torch.tensor(sizes).repeat_interleave(rows), device)


def _check_rows(expected: int, got: int) -> None:
    if expected != got:
        raise ValueError(f"`use_rows`: the batch has {got} examples, the slices ask for {expected} "
                         "(`rows` examples per slice, the slices one after the other).")


class _Absent:
    """Stands in for an absent block's `forward` while a slice is active: zeros of its output's shape, no compute."""

    def __init__(self, out_features: int) -> None:
        self.out_features = out_features

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.out_features)


class _AbsentBias:
    """Stands in for an absent BitFit block's `forward`: a zero delta."""

    def __init__(self, delta: torch.Tensor) -> None:
        self.delta = delta

    def __call__(self) -> torch.Tensor:
        return torch.zeros_like(self.delta, requires_grad=False)


class SuperPet(InPlaceSwitch):
    """Switches a peft model holding one `MixedPetConfig` adapter between its slices; see the module docstring.

    Hooks are installed once (switching is cheap enough for every training step); `remove()` takes them off.
    `select(None)` runs the whole super-PET. `space` (a `search.space.SearchSpace`) lets `use`/`select` take points.
    """

    def __init__(self, model: nn.Module, space: Any = None, adapter_name: Optional[str] = None) -> None:
        self.model = model
        self.space = space
        configs = getattr(model, "peft_config", None)
        if not configs:
            raise TypeError(f"A super-PET is a peft model with a `MixedPetConfig` adapter, got {type(model).__name__}.")
        self.adapter_name = adapter_name or getattr(model, "active_adapter", None) or next(iter(configs))
        self.config = configs[self.adapter_name]
        if type(self.config) is not MixedPetConfig:
            raise TypeError(f"A super-PET needs a `MixedPetConfig` adapter (no gates), "
                            f"got {type(self.config).__name__}.")
        base = model.get_base_model()
        self.model_config = base.config
        self.plans: dict[tuple[int, str], BlockPlan] = module_plans(self.config, self.model_config)
        spec = spec_for(self.model_config)
        self.layers: dict[tuple[int, str], PetLayer] = {}
        for layer, path, module in located_pet_layers(base, spec):
            if (layer, path) in self.plans:
                self.layers[(layer, path)] = module
        self.active: Optional[MixedPetConfig] = None
        self.active_rows: Optional[tuple[list[Optional[MixedPetConfig]], int]] = None
        """(slices, rows per slice) while `use_rows` is on."""
        self._masks: dict[nn.Module, torch.Tensor] = {}
        self._rows_present: dict[nn.Module, torch.Tensor] = {}
        self._constants = _DeviceConstants()
        self._shadowed: list[tuple[nn.Module, str]] = []
        self._handles = []
        for layer in self.layers.values():
            for kind in SIZES:
                block = layer.blocks(kind)[self.adapter_name] if self.adapter_name in layer.blocks(kind) else None
                if block is None:
                    continue
                if isinstance(block, LoraDelta):
                    self._handles.append(block.A.register_forward_hook(self._mask_hook(block)))
                elif isinstance(block, Bottleneck):
                    self._handles.append(block.act.register_forward_hook(self._mask_hook(block)))
                    self._handles.append(block.register_forward_hook(self._rows_present_hook(block)))

    # -- hooks ----------------------------------------------------------------------------------------------------
    def _mask_hook(self, block: nn.Module):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
            mask = self._masks.get(block)
            if mask is None:
                return None
            if mask.dim() == 3:  # one mask per example (`use_rows`)
                _check_rows(mask.shape[0], output.shape[0])
            return output * mask.to(device=output.device, dtype=output.dtype)

        return hook

    def _rows_present_hook(self, block: nn.Module):
        """Zero an adapter's whole output (its `up` bias included) for the rows whose slice lacks it (`use_rows`)."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
            present = self._rows_present.get(block)
            if present is None:
                return None
            _check_rows(present.shape[0], output.shape[0])
            return output * present.to(device=output.device, dtype=output.dtype)[:, None, None]

        return hook

    def _skip(self, block: nn.Module, kind: str) -> None:
        """An absent block computes nothing until the slice changes: zeros of its output (BitFit: a zero delta; a
        prefix: no token)."""
        if kind == "prefix":
            self._shadow(block, "keys_values", _PrefixSlice(block, 0))
        elif kind == "bias":
            self._shadow(block, "forward", _AbsentBias(block.delta))
        else:
            out_features = block.B.out_features if isinstance(block, LoraDelta) else block.up.out_features
            self._shadow(block, "forward", _Absent(out_features))

    def _device(self) -> torch.device:
        """Where the masks go: the device of the super-PET's weights (looked up at each selection: the model may
        have moved since the `SuperPet` was built)."""
        return next(self.model.parameters()).device

    def _shadow(self, block: nn.Module, name: str, function: Any) -> None:
        """Shadow method `name` of `block` by `function` (an instance attribute) until the slice changes."""
        setattr(block, name, function)
        self._shadowed.append((block, name))

    # -- sub-configurations ---------------------------------------------------------------------------------------
    def config_of(self, sub: SubConfig) -> Optional[MixedPetConfig]:
        """`sub` as a `MixedPetConfig` (a point is decoded with the space), None for the whole super-PET."""
        if sub is None or isinstance(sub, MixedPetConfig):
            if sub is not None and type(sub) is not MixedPetConfig:
                raise TypeError(f"A slice of a super-PET is a `MixedPetConfig`, got {type(sub).__name__}.")
            return sub
        if isinstance(sub, Mapping):
            if self.space is None:
                raise TypeError("A point needs the `SearchSpace`: build the `SuperPet` with `space=`.")
            return self.space.decode(sub)
        raise TypeError(f"A slice is a `MixedPetConfig`, a point of the space or None, got {type(sub).__name__}.")

    def check(self, sub: SubConfig) -> dict[tuple[int, str], BlockPlan]:
        """The plan of `sub`, after checking that the super-PET contains it; `SliceError` names the field."""
        config = self.config_of(sub)
        if config is None:
            return self.plans
        for name in SHARED_FIELDS:
            if getattr(config, name) != getattr(self.config, name):
                raise SliceError(f"`{name}` = {getattr(config, name)!r} differs from the super-PET's "
                                 f"{getattr(self.config, name)!r}; a slice cannot change it.")
        plans = module_plans(config, self.model_config)
        for (layer, path), plan in plans.items():
            trained = self.plans.get((layer, path))
            for kind, (plan_field, config_field) in SIZES.items():
                size, largest = getattr(plan, plan_field), getattr(trained, plan_field, 0)
                if size <= largest:
                    continue
                if kind == "lora" and not largest:
                    raise SliceError(f"`target_modules`: {path!r} (layer {layer}) has no LoRA in the super-PET; "
                                     f"its LoRA targets are {self.config.target_modules or 'the default ones'}.")
                raise SliceError(f"`{config_field}` = {size} in layer {layer} is larger than the super-PET's {largest} "
                                 f"there (trained sizes: {config_field}={getattr(self.config, config_field)!r}).")
        return plans

    def select(self, sub: SubConfig) -> None:
        """Make `sub` (None = the whole super-PET) the adapter the model's forward computes."""
        config = self.config_of(sub)
        plans = self.check(config)
        self._clear()
        if config is None:
            return
        device = self._device()
        for key, layer in self.layers.items():
            plan = plans.get(key)
            for kind, (plan_field, _) in SIZES.items():
                if self.adapter_name not in layer.blocks(kind):
                    continue
                block = layer.blocks(kind)[self.adapter_name]
                size, largest = getattr(plan, plan_field, 0), getattr(self.plans[key], plan_field)
                if kind == "prefix":
                    if size < largest:
                        self._shadow(block, "keys_values", _PrefixSlice(block, size))
                elif not size:
                    self._skip(block, kind)
                elif kind == "lora":
                    factor = config.lora_scaling(size) / block.scaling
                    if size < largest or factor != 1.0:
                        self._masks[block] = self._constants.leading(largest, size, factor, device)
                elif size < largest:
                    self._masks[block] = self._constants.leading(largest, size, 1.0, device)
        self.active = config

    def select_rows(self, subs: Sequence[SubConfig], rows: int) -> None:
        """Run `subs` side by side in one forward pass: the batch's examples `[i * rows, (i + 1) * rows)` go
        through `subs[i]` (None = the whole super-PET), so the batch must hold `len(subs) * rows` examples. Each
        row computes what its slice computes under `select`; gradients reach each slice's weights from its rows."""
        if not subs or rows < 1:
            raise ValueError(f"`use_rows` needs at least one slice and `rows` >= 1, got {len(subs)} slices, "
                             f"rows={rows}.")
        configs = [self.config_of(sub) for sub in subs]
        all_plans = [self.check(config) for config in configs]
        self._clear()
        device = self._device()
        for key, layer in self.layers.items():
            for kind, (plan_field, _) in SIZES.items():
                if self.adapter_name not in layer.blocks(kind):
                    continue
                block = layer.blocks(kind)[self.adapter_name]
                largest = getattr(self.plans[key], plan_field)
                sizes = [int(getattr(plans.get(key), plan_field, 0)) for plans in all_plans]
                if all(size == largest for size in sizes) and kind != "lora":
                    continue  # every row sees the whole block
                if not any(sizes):  # absent from every row: skipped as `select` skips it
                    self._skip(block, kind)
                elif kind == "prefix":
                    self._shadow(block, "keys_values", _PrefixRows(block, self._constants.row_lengths(sizes, rows, device)))
                elif kind == "bias":
                    self._shadow(block, "forward", _BiasRows(block, self._constants.row_flags(sizes, rows, device)))
                else:
                    factors = [
                        config.lora_scaling(size) / block.scaling if kind == "lora" and config is not None and size
                        else 1.0 for config, size in zip(configs, sizes)
                    ]
                    if all(size == largest and factor == 1.0 for size, factor in zip(sizes, factors)):
                        continue
                    masks = torch.stack([self._constants.leading(largest, size, factor, device)
                                         for size, factor in zip(sizes, factors)])
                    self._masks[block] = masks.repeat_interleave(rows, dim=0)[:, None, :]
                    if isinstance(block, Bottleneck) and not all(sizes):  # `up`'s bias must not reach those rows
                        self._rows_present[block] = self._constants.row_flags(sizes, rows, device)
        self.active = None
        self.active_rows = (configs, rows)

    @contextlib.contextmanager
    def use_rows(self, subs: Sequence[SubConfig], rows: int) -> Iterator[None]:
        """`select_rows(subs, rows)` inside the block, then back to the previously active slice."""
        previous = self.active
        self.select_rows(subs, rows)
        try:
            yield
        finally:
            self.select(previous)

    def _clear(self) -> None:
        self.active_rows = None
        self._masks.clear()
        self._rows_present.clear()
        for block, name in self._shadowed:
            block.__dict__.pop(name, None)
        self._shadowed.clear()
        self.active = None


    def remove(self) -> None:
        """Take the hooks off: the model is the whole super-PET again."""
        self._clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- weights --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def copy_slice_into(self, model: nn.Module) -> int:
        """Copy the slice into `model`, a peft model of a sub-configuration on the same backbone: every trainable
        tensor gets the leading block of the super-PET's tensor of the same name (the first ranks, units, tokens;
        the head whole). Returns the number of tensors copied. Used to warm-start a stand-alone re-training."""
        own = dict(self.model.named_parameters())
        copied = 0
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            source = own.get(name)
            if source is None or source.dim() != parameter.dim() or any(
                s < t for s, t in zip(source.shape, parameter.shape)
            ):
                raise SliceError(f"`{name}` {tuple(parameter.shape)} is not a slice of the super-PET "
                                 f"({None if source is None else tuple(source.shape)}).")
            parameter.copy_(source[tuple(slice(0, n) for n in parameter.shape)])
            copied += 1
        return copied


def _leading(size: int, keep: int, value: float) -> torch.Tensor:
    mask = torch.zeros(size)
    mask[:keep] = value
    return mask
