"""Per-block optimisation: an AdamW parameter group per PET block type, each with its own learning rate.

One shared learning rate is unfair to mixed configs (a prefix wants ~10x a LoRA's rate; full fine-tuning ~20x
less), so the runner, `peft-autoconfig train` and users' own `Trainer` (through `pet_optimizer_cls_and_kwargs` or
`pet_optimizer`) all train with the rates of `DEFAULT_LEARNING_RATES`, overridable per block. The Trainer still
builds the warm-up + linear-decay scheduler from `TrainingArguments` over these groups.

Adapter rates depend on width: the defaults hold at 24 units, and a wider serial or parallel adapter trains at the
rate x sqrt(24 / width) (`adapter_width_factor`; `adapter_width_scaling=False` turns it off), because at one rate
the widest adapters of the search space collapse to the majority class.

Weight-decay policy (`DEFAULT_WEIGHT_DECAY` = 0.0, as usual for PET): with a positive `weight_decay`, only weight
matrices/tensors (>= 2 dimensions) are decayed; biases, LayerNorm weights and UniPELT gates never are, and they go
into a separate group named "<block>.no_decay".
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch

from ..tuners.naming import BLOCK_TYPES, parameter_block_type

HEAD_MODULE_NAMES: frozenset[str] = frozenset({"classifier", "score"})
"""Names of sequence-classification heads (BERT/RoBERTa `classifier`; GPT-2/Llama `score`), as in peft's
`PeftModelForSequenceClassification`: their parameters count as head, not as PET parameters."""

LEARNING_RATE_KEYS: tuple[str, ...] = (*BLOCK_TYPES, "head", "full")
"""Keys of a learning-rate table: the PET block types, the classification head, and "full" (every parameter of a
model without PET, i.e. full fine-tuning)."""

DEFAULT_LEARNING_RATES: dict[str, float] = {
    "lora": 3e-3,
    "serial_adapter": 3e-3,
    "parallel_adapter": 1e-3,
    "prefix": 1e-2,
    "prefix_mlp": 1e-3,
    "bias": 1e-3,
    "gate": 1e-3,
    "head": 1e-3,
    "full": 5e-5,
}
"""Peak AdamW learning rate per block type. The one place these defaults live.

Chosen by `benchmarks/lr_sweep.py` (MiniLM, Rotten Tomatoes, 4,000 sentences x 1 epoch, whole validation split;
table in benchmarks/RESULTS.md): the best of {3e-4, 1e-3, 3e-3, 1e-2} for each block trained alone (LoRA r=8 on q,v
scaling 1; serial adapter 24, Pfeiffer; parallel adapter 24, scaling 4; flat prefix 10). In each case the next
higher rate collapsed to the majority class. `gate`, `head`, `bias` and `full` were not swept: gates and head take
the adapters' 1e-3, full fine-tuning the usual 5e-5; a prefix trained through its MLP reparameterisation
(`prefix_mlp`, UniPELT's default) takes 1e-3: at the flat prefix's 1e-2 UniPELT stayed at the majority class (0.565
validation accuracy on 400 sentences after 125 steps on 2,000; 1e-3 for the prefix: 0.7775; a flat prefix at 1e-2:
0.78; benchmarks/unipelt_prefix_lr.py, RESULTS.md section 2); BitFit bias deltas take 1e-3, the upper end of the
1e-4..1e-3 range Ben Zaken et al. (2022) report for BERT (short low-fidelity runs favour the higher rate)."""

ADAPTER_REFERENCE_WIDTH = 24
"""The bottleneck width (units) the adapters' default rates were chosen at (`lr_sweep.py`, adapters of 24 units)."""

WIDTH_SCALED_BLOCKS: tuple[str, ...] = ("serial_adapter", "parallel_adapter")


def adapter_width_factor(width: int) -> float:
    """The factor on an adapter's rate at `width` units: sqrt(24 / width) above the reference width, else 1.

    Why: Adam moves every weight by about the rate, so the change of an adapter's output grows with its width. At
    the 24-unit rate (1e-3) a 384-unit parallel adapter collapses to the majority class, while 96 units train
    (benchmarks/RESULTS.md section 2c, validation accuracy, one seed: parallel 384 units 1e-3 0.5812, 5e-4 0.7671,
    2.5e-4 = 1e-3 x sqrt(24/384) 0.7765; parallel 192 units 1e-3 0.7867, 3.5e-4 0.7851; parallel 96 units 1e-3
    0.7859, 5e-4 0.7875; serial 384 units 3e-3 0.7725, 7.5e-4 0.7937, 1.875e-4 0.7835)."""
    if width < 1:
        raise ValueError(f"an adapter width must be >= 1, got {width}.")
    return min(1.0, math.sqrt(ADAPTER_REFERENCE_WIDTH / width))


DEFAULT_WARMUP_RATIO = 0.06
"""Fraction of the optimiser steps spent warming the learning rate up linearly from 0 before the linear decay."""

DEFAULT_WEIGHT_DECAY = 0.0
"""AdamW weight decay; see the module docstring for which parameters it applies to."""


def validate_learning_rates(rates: Mapping[str, float], field: str = "learning_rates") -> dict[str, float]:
    """`rates` as a plain dict of floats; `ValueError` naming `<field>.<block>` for an unknown block or a rate <= 0."""
    if not isinstance(rates, Mapping):
        raise TypeError(f"`{field}` must be a mapping of block type to learning rate, got {type(rates).__name__}.")
    checked: dict[str, float] = {}
    for block, rate in rates.items():
        if block not in LEARNING_RATE_KEYS:
            raise ValueError(
                f"`{field}` names an unknown block type {block!r}; allowed: {', '.join(LEARNING_RATE_KEYS)}."
            )
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise TypeError(f"`{field}.{block}` must be a number, got {rate!r}.")
        if not rate > 0:
            raise ValueError(f"`{field}.{block}` must be > 0, got {rate!r}.")
        checked[block] = float(rate)
    return checked


def resolve_learning_rates(
    learning_rates: Optional[Mapping[str, float]] = None, learning_rate: Optional[float] = None
) -> dict[str, float]:
    """The full table: `DEFAULT_LEARNING_RATES`, every entry replaced by `learning_rate` when one is given (the
    single-rate protocol of earlier versions), then the entries named in `learning_rates`."""
    rates = dict(DEFAULT_LEARNING_RATES)
    if learning_rate is not None:
        rates = dict.fromkeys(rates, float(learning_rate))
    rates.update(validate_learning_rates(learning_rates or {}))
    return rates


def _has_peft(model: torch.nn.Module, names: list[str]) -> bool:
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (
        isinstance(model, PeftModel)
        or any(parameter_block_type(name) is not None for name in names)
        or any(isinstance(module, BaseTunerLayer) for module in model.modules())
    )


def is_head_parameter(name: str) -> bool:
    return bool(HEAD_MODULE_NAMES.intersection(name.split(".")))


def parameter_group_name(name: str, peft: bool) -> Optional[str]:
    """The learning-rate key of parameter `name`: its PET block, "head", "full" (no PET in the model), or None."""
    block = parameter_block_type(name)
    if block is not None:
        return block
    if not peft:
        return "full"
    return "head" if is_head_parameter(name) else None


def adapter_widths(model: torch.nn.Module) -> dict[int, int]:
    """`id(parameter)` -> bottleneck width (units) for the down/up weights of every serial and parallel adapter."""
    from ..tuners.blocks import Bottleneck

    return {id(parameter): module.down.out_features for module in model.modules() if isinstance(module, Bottleneck)
            for parameter in (*module.down.parameters(), *module.up.parameters())}


def pet_parameter_groups(
    model: torch.nn.Module,
    learning_rates: Optional[Mapping[str, float]] = None,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    adapter_width_scaling: bool = True,
) -> list[dict[str, Any]]:
    """AdamW parameter groups, one per block type with trainable parameters (`"name"`, `"params"`, `"lr"`,
    `"weight_decay"`), the rates taken from `DEFAULT_LEARNING_RATES` overridden by `learning_rates`.

    With `adapter_width_scaling`, serial and parallel adapters wider than `ADAPTER_REFERENCE_WIDTH` units train at
    their block's rate x `adapter_width_factor(width)`, one group per width, named "<block>@<width>" (the block's
    rate is the rate at the reference width). A model without PET (full fine-tuning) puts every parameter in
    "full". Raises `ValueError` for a trainable parameter of a PEFT model that is neither a known PET block nor the
    classification head (e.g. a peft method this table does not know), naming it.
    """
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay!r}.")
    rates = {**DEFAULT_LEARNING_RATES, **validate_learning_rates(learning_rates or {})}
    named = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    peft = _has_peft(model, [name for name, _ in model.named_parameters()])
    widths = adapter_widths(model) if adapter_width_scaling else {}
    grouped: dict[tuple[str, int, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in named:
        key = parameter_group_name(name, peft)
        if key is None:
            raise ValueError(
                f"trainable parameter `{name}` belongs to no known block type ({', '.join(BLOCK_TYPES)}) nor to the "
                f"classification head ({', '.join(sorted(HEAD_MODULE_NAMES))}); freeze it or train it with your own "
                "optimizer."
            )
        width = widths.get(id(parameter), 0) if key in WIDTH_SCALED_BLOCKS else 0
        width = width if width > ADAPTER_REFERENCE_WIDTH else 0
        decayed = weight_decay > 0 and key != "gate" and parameter.ndim >= 2
        grouped.setdefault((key, width, decayed or weight_decay == 0), []).append(parameter)
    groups = []
    order = {key: i for i, key in enumerate(LEARNING_RATE_KEYS)}
    for key, width, decayed in sorted(grouped, key=lambda g: (order[g[0]], g[1], not g[2])):
        name = f"{key}@{width}" if width else key
        groups.append({"name": name if decayed or weight_decay == 0 else f"{name}.no_decay",
                       "params": grouped[key, width, decayed],
                       "lr": rates[key] * (adapter_width_factor(width) if width else 1.0),
                       "weight_decay": weight_decay if decayed else 0.0})
    return groups


def pet_optimizer(
    model: torch.nn.Module,
    learning_rates: Optional[Mapping[str, float]] = None,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    adapter_width_scaling: bool = True,
) -> torch.optim.AdamW:
    """AdamW over `pet_parameter_groups(model, learning_rates, weight_decay)`, for a user's own Trainer:
    `Trainer(model=model, args=args, optimizers=(pet_optimizer(model), None), ...)` (the Trainer adds its
    warm-up/decay scheduler from `args`). Not with DeepSpeed, which replaces such an optimizer by Trainer's
    default one, nor with `model_init`: use `pet_optimizer_cls_and_kwargs` there."""
    return torch.optim.AdamW(pet_parameter_groups(model, learning_rates, weight_decay, adapter_width_scaling))


class PetOptimizerFactory:
    """What `pet_optimizer_cls_and_kwargs` gives Trainer: transformers 5 calls `PetOptimizerFactory()(model, **kwargs)`
    from `Trainer.create_optimizer`, i.e. once the model exists (so it works with `model_init`) and on every path
    that builds the optimizer, DeepSpeed's included (DeepSpeed drops an optimizer passed through `optimizers`)."""

    def __call__(self, model: torch.nn.Module, learning_rates: Optional[Mapping[str, float]] = None,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, adapter_width_scaling: bool = True) -> torch.optim.AdamW:
        return pet_optimizer(model, learning_rates, weight_decay, adapter_width_scaling)


def pet_optimizer_cls_and_kwargs(
    learning_rates: Optional[Mapping[str, float]] = None, weight_decay: float = DEFAULT_WEIGHT_DECAY,
    adapter_width_scaling: bool = True,
) -> tuple[type, dict[str, Any]]:
    """`Trainer(optimizer_cls_and_kwargs=pet_optimizer_cls_and_kwargs(...))`: the per-block AdamW of `pet_optimizer`,
    built by the Trainer itself. Prefer it to `optimizers=(pet_optimizer(model), None)` with DeepSpeed or
    `model_init`. The rates are checked now, before any training."""
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay!r}.")
    rates = validate_learning_rates(learning_rates or {})
    return PetOptimizerFactory, {"learning_rates": rates, "weight_decay": weight_decay,
                                 "adapter_width_scaling": adapter_width_scaling}
