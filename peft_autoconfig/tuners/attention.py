"""Prefix tuning inside a tuner, through transformers' attention interface.

transformers calls `ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, query, key, value, mask, ...)`
from every supported attention module, after the projections, rotary embeddings and the KV cache update. We
register `pet_prefix_eager` and `pet_prefix_sdpa`: each looks up the prefix holder (a `PetLayer`) on the attention
module, prepends its key/value prefixes (per key/value head, so grouped-query attention works), widens the mask
so every query may attend to the prefix (a missing mask is rebuilt, causal where the module is causal), and calls
the implementation the user chose. The same names are registered for mask creation, so padding masks are built
exactly as for the wrapped implementation.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import torch
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from ..architectures import spec_for
from .layer import PetLayer

PREFIX_IMPLEMENTATION_PREFIX = "pet_prefix_"
WRAPPABLE_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa")


def _eager_function_of(module: nn.Module) -> Callable[..., Any]:
    """The modeling file's own eager attention (each family has its own `eager_attention_forward`)."""
    function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if function is None:
        raise RuntimeError(f"{type(module).__name__} has no `eager_attention_forward`; prefixes cannot be applied.")
    return function


def _widen_mask(
    mask: Optional[torch.Tensor], module: nn.Module, query: torch.Tensor, key: torch.Tensor, length: int, eager: bool
) -> torch.Tensor:
    """Prepend `length` always-visible columns to the mask (bool: True = attend; float: additive, 0 = attend)."""
    q_len, kv_len = query.shape[-2], key.shape[-2]
    if mask is None:
        allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device)
        if getattr(module, "is_causal", False) and q_len > 1:
            allowed = torch.tril(allowed, diagonal=kv_len - q_len)
        mask = allowed[None, None]
        if eager:
            mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~mask, torch.finfo(query.dtype).min
            )
    visible = torch.ones if mask.dtype == torch.bool else torch.zeros
    columns = visible((*mask.shape[:-1], length), dtype=mask.dtype, device=mask.device)
    return torch.cat([columns, mask], dim=-1)


def _add_prefix_biases(
    mask: torch.Tensor, biases: tuple[Optional[torch.Tensor], ...], keys: tuple[torch.Tensor, ...], query: torch.Tensor
) -> torch.Tensor:
    """Add each prefix's per-query bias `(batch, 1, query, 1)` to its columns of the widened mask (made additive)."""
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(query.dtype).min
        )
    batch, q_len = query.shape[0], query.shape[-2]
    columns = [
        torch.zeros(batch, 1, q_len, k.shape[-2], dtype=mask.dtype, device=mask.device)
        if bias is None
        else bias.to(mask.dtype).expand(batch, 1, q_len, k.shape[-2])
        for bias, k in zip(biases, keys)
    ]
    additive = torch.cat(columns, dim=-1)
    return mask + nn.functional.pad(additive, (0, mask.shape[-1] - additive.shape[-1]))


def _active_prefixes(module: nn.Module) -> list[Any]:
    config = getattr(module, "config", None)
    if config is None:
        return []
    holder = getattr(module, spec_for(config).prefix_holder, None)
    if not isinstance(holder, PetLayer) or holder.disable_adapters:
        return []
    prefixes = []
    blocks = holder.blocks("prefix")
    for name in holder.active_adapters:
        if name not in blocks:
            continue
        prefix = blocks[name]
        if prefix.gate is not None and prefix.gate.force == 0:
            prefix.pending_gate = None
            continue  # a gate pinned shut removes the prefix exactly
        if prefix.token_keep is not None and not bool(prefix.token_keep.any()):
            prefix.pending_gate = None
            continue  # every token pruned (tuners/units.py)
        prefixes.append(prefix)
    return prefixes


def make_prefix_attention(base: str) -> Callable[..., Any]:
    """Build the attention function that adds prefixes and then calls implementation `base`."""
    eager = base == "eager"

    def prefix_attention(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        **kwargs: Any,
    ) -> Any:
        inner = _eager_function_of(module) if eager else ALL_ATTENTION_FUNCTIONS[base]
        prefixes = _active_prefixes(module)
        if prefixes:
            batch = key.shape[0]
            keys, values, biases = zip(*(p.keys_values(batch, key.dtype) for p in prefixes))
            length = sum(k.shape[-2] for k in keys)
            attention_mask = _widen_mask(attention_mask, module, query, key, length, eager)
            if any(bias is not None for bias in biases):
                attention_mask = _add_prefix_biases(attention_mask, biases, keys, query)
            key = torch.cat([*keys, key], dim=-2)
            value = torch.cat([*values, value], dim=-2)
            kwargs.pop("is_causal", None)
        return inner(module, query, key, value, attention_mask, **kwargs)

    return prefix_attention


def prefix_implementation_name(current: str | None) -> str:
    """The registered wrapper name for the model's current implementation; errors for unsupported ones."""
    current = current or "eager"
    if current.startswith(PREFIX_IMPLEMENTATION_PREFIX):
        return current
    if current not in WRAPPABLE_IMPLEMENTATIONS:
        raise ValueError(
            f"Prefix blocks support the attention implementations {list(WRAPPABLE_IMPLEMENTATIONS)}, but the model uses "
            f"{current!r}. Load the model with `attn_implementation=\"sdpa\"` (or \"eager\"), or set `prefix_length=0`."
        )
    return PREFIX_IMPLEMENTATION_PREFIX + current


def base_implementation_name(current: str | None) -> str | None:
    if current and current.startswith(PREFIX_IMPLEMENTATION_PREFIX):
        return current[len(PREFIX_IMPLEMENTATION_PREFIX) :]
    return current


def register_prefix_attention() -> None:
    """Register the wrappers with transformers' attention and mask interfaces (idempotent)."""
    for base in WRAPPABLE_IMPLEMENTATIONS:
        name = PREFIX_IMPLEMENTATION_PREFIX + base
        if name not in ALL_ATTENTION_FUNCTIONS:
            AttentionInterface.register(name, make_prefix_attention(base))
        if name not in ALL_MASK_ATTENTION_FUNCTIONS:
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
