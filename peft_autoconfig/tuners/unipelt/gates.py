"""Reading, recording and pruning UniPELT gates (pinning: `pins.py`; which tokens a gate averages: `context.py`).

A gate is one scalar per example, module and layer (`blocks.Gate`). This module turns the gates of a model into a
flat table of `GateValue` rows, so the same table feeds a printout, Trainer logs and `to_mixed_config`, which keeps
only the blocks whose gates stay open: UniPELT as a cheap search signal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from ..blocks import Gate
from ..layer import located_pet_layers

if TYPE_CHECKING:
    from ..mixed.config import MixedPetConfig
    from .config import UniPELTConfig

BLOCK_KINDS: tuple[str, ...] = ("lora", "serial", "parallel", "prefix")
"""Kinds of gated blocks; a LoRA block is named `lora/<path inside the layer>` in tables."""


@dataclass(frozen=True)
class GateValue:
    """One gate of one adapter: where it sits, the size of the block it scales, and its mean value.

    `mean` averages the gate over the examples seen (`count`); NaN when the gate has not run yet. `forced` is the
    pinned value (`set_gate`), None when learned.
    """

    layer: int
    block: str
    adapter: str
    size: int
    mean: float
    count: int
    forced: Optional[float] = None

    @property
    def kind(self) -> str:
        return self.block.split("/", 1)[0]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateSite:
    """A gate found in a model: its position, the block size and the module itself."""

    layer: int
    block: str
    adapter: str
    size: int
    gate: Gate


def _block_size(kind: str, block: nn.Module) -> int:
    if kind == "lora":
        return int(block.rank)
    if kind == "prefix":
        return int(block.length)
    return int(block.down.out_features)


def find_gates(tuner: nn.Module, adapter_name: Optional[str] = None) -> list[GateSite]:
    """All gates of `adapter_name` (None: every adapter) in a `MixedPetModel`/`UniPELTModel`, ordered by layer."""
    from ...architectures import spec_for

    spec = spec_for(tuner.model.config)
    sites: list[GateSite] = []
    for layer, path, module in located_pet_layers(tuner.model, spec):
        for kind in BLOCK_KINDS:
            for adapter, block in module.blocks(kind).items():
                if adapter_name is not None and adapter != adapter_name:
                    continue
                if block.gate is None:
                    continue
                name = f"lora/{path}" if kind == "lora" else kind
                sites.append(GateSite(layer, name, adapter, _block_size(kind, block), block.gate))
    order = {kind: i for i, kind in enumerate(BLOCK_KINDS)}
    sites.sort(key=lambda s: (s.adapter, s.layer, order[s.block.split("/", 1)[0]], s.block))
    return sites


def last_gate_values(tuner: nn.Module, adapter_name: Optional[str] = None) -> list[GateValue]:
    """The gates of the most recent forward pass (`Gate.last_value`), averaged over its batch."""
    rows = []
    for site in find_gates(tuner, adapter_name):
        value = site.gate.last_value
        count = 0 if value is None else int(value.numel())
        mean = float(value.float().mean()) if count else math.nan
        rows.append(GateValue(site.layer, site.block, site.adapter, site.size, mean, count, site.gate.force))
    return rows


class GateRecorder:
    """Average gates over many forward passes (forward hooks), separately for training and eval mode.

    Sums stay on the model's device and are read only in `table`, so recording adds no device synchronisation per
    step. Use as a context manager or call `close()` to remove the hooks.
    """

    def __init__(self, tuner: nn.Module, adapter_name: Optional[str] = None) -> None:
        self.sites = find_gates(tuner, adapter_name)
        if not self.sites:
            raise ValueError(
                "The model has no gates to record: use a `UniPELTConfig` with at least one `gate_*` flag set to True."
            )
        self._sums: dict[tuple[int, bool], torch.Tensor] = {}
        self._counts: dict[tuple[int, bool], int] = {}
        self._handles = [site.gate.register_forward_hook(self._hook_for(i)) for i, site in enumerate(self.sites)]

    def _hook_for(self, index: int):
        def hook(module: Gate, args: tuple, output: torch.Tensor) -> None:
            key = (index, module.training)
            per_example = module.last_value  # the masked mean of each example, also for per-position gates
            value = per_example.float().sum()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
            self._counts[key] = self._counts.get(key, 0) + int(per_example.numel())

        return hook

    def has_data(self, training: bool) -> bool:
        return any(mode == training and n for (_, mode), n in self._counts.items())

    def table(self, training: Optional[bool] = None) -> list[GateValue]:
        """Mean gates since the last `reset` (`training`: True/False for one mode, None for both)."""
        rows = []
        for i, site in enumerate(self.sites):
            modes = (True, False) if training is None else (training,)
            total = sum(float(self._sums[(i, m)]) for m in modes if (i, m) in self._sums)
            count = sum(self._counts.get((i, m), 0) for m in modes)
            mean = total / count if count else math.nan
            rows.append(GateValue(site.layer, site.block, site.adapter, site.size, mean, count, site.gate.force))
        return rows

    def reset(self, training: Optional[bool] = None) -> None:
        for key in [k for k in self._counts if training is None or k[1] == training]:
            self._counts.pop(key, None)
            self._sums.pop(key, None)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> GateRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarize_gates(rows: Iterable[GateValue], per_layer: bool = False, prefix: str = "gate/") -> dict[str, float]:
    """Log-ready means: `gate/<kind>_mean` per block kind, plus `gate/layer<i>/<block>` when `per_layer`.

    The kind mean averages the per-gate means (each layer and LoRA target weighs the same); rows without data are
    left out.
    """
    by_kind: dict[str, list[float]] = {}
    per_layer_values: dict[str, float] = {}
    for row in rows:
        if math.isnan(row.mean):
            continue
        by_kind.setdefault(row.kind, []).append(row.mean)
        if per_layer:
            adapter = "" if row.adapter == "default" else f"{row.adapter}/"
            per_layer_values[f"{prefix}{adapter}layer{row.layer}/{row.block}"] = row.mean
    summary = {f"{prefix}{kind}_mean": sum(v) / len(v) for kind, v in by_kind.items()}
    summary.update(per_layer_values)
    return summary


def format_gate_table(rows: Sequence[GateValue], digits: int = 3) -> str:
    """A plain-text table: one line per (adapter, layer), one column per block; `-` where absent, `=v` if forced."""
    if not rows:
        return "(no gates)"
    blocks: list[str] = []
    for row in rows:
        if row.block not in blocks:
            blocks.append(row.block)
    order = {kind: i for i, kind in enumerate(BLOCK_KINDS)}
    blocks.sort(key=lambda b: (order[b.split("/", 1)[0]], b))
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for row in rows:
        if row.forced is not None:
            text = f"={row.forced:g}"
        elif math.isnan(row.mean):
            text = "n/a"
        else:
            text = f"{row.mean:.{digits}f}"
        cells.setdefault((row.adapter, row.layer), {})[row.block] = text
    adapters = sorted({row.adapter for row in rows})
    header = (["adapter"] if len(adapters) > 1 else []) + ["layer"] + blocks
    lines = [header]
    for adapter, layer in sorted(cells):
        line = ([adapter] if len(adapters) > 1 else []) + [str(layer)]
        lines.append(line + [cells[(adapter, layer)].get(b, "-") for b in blocks])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def to_mixed_config(
    config: UniPELTConfig,
    gate_table: Iterable[GateValue | dict[str, Any]],
    threshold: float = 0.5,
    adapter_name: Optional[str] = None,
    **overrides: Any,
) -> MixedPetConfig:
    """A `MixedPetConfig` with only the blocks whose mean gate is >= `threshold`, sized per layer.

    Rules: a serial/parallel adapter or prefix is kept in a layer when its gate there is open, with the size it had.
    LoRA is per layer and per target: `target_modules` becomes the targets open in at least one layer, and
    `lora_rank[layer]` is set where at least one of those targets is open (MixedPetConfig cannot give a target a
    rank in one layer and not another). Ungated blocks of `config` are kept as they are. Every other field (alpha,
    dropout, scaling, non-linearity, task type, modules_to_save) is copied; `overrides` replace any field.
    Raises `ValueError` if every gate is closed (nothing would be trained).
    """
    from ..mixed.config import MixedPetConfig

    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1], got {threshold!r}.")
    rows = [row if isinstance(row, GateValue) else GateValue(**row) for row in gate_table]
    adapters = sorted({row.adapter for row in rows})
    if adapter_name is None:
        if len(adapters) > 1:
            raise ValueError(f"The gate table holds several adapters {adapters}; pass `adapter_name`.")
    else:
        rows = [row for row in rows if row.adapter == adapter_name]
    if not rows:
        raise ValueError("`gate_table` is empty: run a forward pass (or a `GateRecorder`) before converting.")
    unknown = [row for row in rows if math.isnan(row.mean) and row.forced is None]
    if unknown:
        raise ValueError(
            f"{len(unknown)} gates have no value yet (e.g. layer {unknown[0].layer} {unknown[0].block!r}): "
            "run a forward pass before converting."
        )

    def is_open(row: GateValue) -> bool:
        value = row.forced if row.forced is not None else row.mean
        return value >= threshold

    sizes: dict[str, dict[int, int]] = {"serial": {}, "parallel": {}, "prefix": {}}
    lora_open: dict[int, dict[str, int]] = {}
    gated_kinds = {row.kind for row in rows}
    for row in rows:
        if row.kind == "lora":
            if is_open(row):
                lora_open.setdefault(row.layer, {})[row.block.split("/", 1)[1]] = row.size
        elif is_open(row):
            sizes[row.kind][row.layer] = row.size
    targets = sorted({path for per_target in lora_open.values() for path in per_target})
    lora_rank: dict[int, int] = {layer: max(per_target.values()) for layer, per_target in lora_open.items()}

    def keep_or_ungated(kind: str, field_name: str, pruned: dict[int, int]) -> Any:
        if field_name in overrides:
            return overrides[field_name]
        if kind in gated_kinds:
            return pruned
        return _ungated_sizes(config, field_name)

    fields = dict(
        serial_adapter_size=keep_or_ungated("serial", "serial_adapter_size", sizes["serial"]),
        parallel_adapter_size=keep_or_ungated("parallel", "parallel_adapter_size", sizes["parallel"]),
        prefix_length=keep_or_ungated("prefix", "prefix_length", sizes["prefix"]),
        lora_rank=lora_rank if "lora" in gated_kinds else _ungated_sizes(config, "lora_rank"),
        target_modules=(targets or config.target_modules) if "lora" in gated_kinds else config.target_modules,
        bias_tuning=config.bias_tuning,  # never gated: kept as is
        bias_targets=config.bias_targets,
        serial_adapter_placement=config.serial_adapter_placement,
        parallel_adapter_scaling=config.parallel_adapter_scaling,
        adapter_non_linearity=config.adapter_non_linearity,
        lora_alpha=config.lora_alpha,
        use_rslora=config.use_rslora,
        lora_dropout=config.lora_dropout,
        layers_to_transform=config.layers_to_transform,
        modules_to_save=config.modules_to_save,
        task_type=config.task_type,
        base_model_name_or_path=config.base_model_name_or_path,
        revision=config.revision,
        inference_mode=False,
    )
    fields.update(overrides)
    size_fields = ("serial_adapter_size", "parallel_adapter_size", "prefix_length", "lora_rank", "bias_tuning")
    if not _any_positive(fields[name] for name in size_fields):
        raise ValueError(
            f"Every gate is below `threshold`={threshold}: no block would be kept. Lower the threshold or train longer "
            "(gate means per block: "
            + ", ".join(f"{k}={v:.3f}" for k, v in summarize_gates(rows).items())
            + ")."
        )
    return MixedPetConfig(**fields)


def _ungated_sizes(config: UniPELTConfig, field_name: str) -> Any:
    """Sizes of a block that has no gate; the reduction factor is resolved only when the gate table has sizes."""
    if field_name == "serial_adapter_size" and getattr(config, "adapter_reduction_factor", None) is not None:
        raise ValueError(
            "The serial adapter is sized by `adapter_reduction_factor` and has no gate, so the table does not give its "
            "size: pass `serial_adapter_size=` explicitly."
        )
    return getattr(config, field_name)


def _any_positive(values: Iterable[Any]) -> bool:
    for value in values:
        if isinstance(value, int) and value > 0:
            return True
        if isinstance(value, dict) and any(v > 0 for v in value.values()):
            return True
    return False
