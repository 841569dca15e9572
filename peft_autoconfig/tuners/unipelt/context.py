"""Which tokens a UniPELT gate averages over: the attention mask, causality and the KV cache.

A gate is a mean of `sigmoid(Linear(x))` over tokens. Encoders average over the real tokens of each example (padding
excluded: one scalar per example, as in the paper). Decoders keep a causal running mean: the gate at position t
averages the real tokens <= t, so no position sees the future. The gates never see the attention mask, so
`GateContextCapture`, a forward pre-hook on the tuner's top-level model, reads `attention_mask` and the KV cache of
each call and hands one `GateContext` to every gate of that model. After a decoder's forward pass, each gate's running
sums at the last position are stored on the returned cache object (`GateSums`), and the next call with that cache
continues from them, so cached decoding computes exactly the gates of a full forward pass.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from ..blocks import Gate

CACHE_ATTRIBUTE = "unipelt_gate_sums"
"""Attribute of a transformers `Cache` holding the `GateSums` of the tokens it caches."""

_CACHE_ARGUMENTS = ("cache", "past_key_values")


@dataclass
class GateSums:
    """Running sums (`sum mask * sigmoid`, `sum mask`, each `(batch, 1, 1)`) of every gate over `length` tokens."""

    length: int
    sums: dict[Gate, tuple[torch.Tensor, torch.Tensor]]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Follow `Cache.reorder_cache` (beam search): row i takes the sums of row `beam_idx[i]`."""
        self.sums = {
            gate: (num.index_select(0, beam_idx.to(num.device)), den.index_select(0, beam_idx.to(den.device)))
            for gate, (num, den) in self.sums.items()
        }


def attach_sums(cache: Any, sums: GateSums) -> None:
    """Store `sums` on `cache` and make the cache's `reorder_cache` reorder them too (once per cache object)."""
    if CACHE_ATTRIBUTE not in vars(cache):
        reorder_cache = cache.reorder_cache

        def reorder_with_gate_sums(beam_idx: torch.Tensor) -> Any:
            result = reorder_cache(beam_idx)
            getattr(cache, CACHE_ATTRIBUTE).reorder(beam_idx)
            return result

        cache.reorder_cache = reorder_with_gate_sums
    setattr(cache, CACHE_ATTRIBUTE, sums)


def token_mask_of(attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """`(batch, length)` float mask, 1 for real tokens; None means every token is real.

    A 2-D padding mask is used as is. A 4-D mask `(batch, heads, query, key)` (bool: True = attend; float: additive,
    0 = attend) marks a token real when some query may attend to it.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        return attention_mask.float()
    if attention_mask.dim() == 4:
        allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        return allowed[:, 0].any(dim=-2).float()
    raise ValueError(
        f"`attention_mask` must be 2-D (batch, length) or 4-D (batch, heads, query, key), got shape "
        f"{tuple(attention_mask.shape)}."
    )


class GateContext:
    """The token mask, causality and carried cache sums of one forward pass, shared by all gates of a model."""

    def __init__(
        self, mask: Optional[torch.Tensor], causal: bool, past_length: int = 0, carried: Optional[GateSums] = None
    ) -> None:
        self.mask = mask
        self.causal = causal
        self.past_length = past_length
        self.carried = carried
        self.outgoing: dict[Gate, tuple[torch.Tensor, torch.Tensor]] = {}

    def _mask_for(self, scores: torch.Tensor) -> Optional[torch.Tensor]:
        """The mask of the `n` tokens of this pass as `(batch, n, 1)`; the 2-D mask may also cover the cached ones."""
        if self.mask is None:
            return None
        n = scores.shape[1]
        if self.mask.shape[-1] not in (n, self.past_length + n) or self.mask.shape[0] != scores.shape[0]:
            raise ValueError(
                f"`attention_mask` has shape {tuple(self.mask.shape)}, but the gate sees batch {scores.shape[0]} with "
                f"{n} new tokens after {self.past_length} cached ones."
            )
        return self.mask[:, -n:, None].to(scores.dtype)

    def reduce(self, gate: Gate, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Average per-token `scores` `(batch, n, 1)`; returns (gate to apply, one value per example `(batch, 1, 1)`).

        Encoders: the masked mean, `(batch, 1, 1)`. Decoders: the causal running mean, `(batch, n, 1)`; a position
        before the first real token (left padding) keeps its own score; the per-example value is the running mean at
        the last position, i.e. the masked mean of every token so far.
        """
        mask = self._mask_for(scores)
        if not self.causal:
            if mask is None:
                value = scores.mean(dim=1, keepdim=True)
            else:
                value = (scores * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
            return value, value
        if mask is None:
            mask = torch.ones_like(scores)
        numerator = torch.cumsum(scores * mask, dim=1)
        denominator = torch.cumsum(mask, dim=1)
        if self.past_length:
            carried = None if self.carried is None else self.carried.sums.get(gate)
            if carried is None:
                raise RuntimeError(
                    f"The KV cache holds {self.past_length} tokens but no UniPELT gate sums for them: build the cache "
                    "with this model and its adapter active (running sums of the gates are stored on the cache)."
                )
            if carried[0].shape[0] != scores.shape[0]:
                raise RuntimeError(
                    f"The KV cache's UniPELT gate sums are for batch {carried[0].shape[0]}, the input has batch "
                    f"{scores.shape[0]}: a cache whose batch was changed outside `reorder_cache` cannot be continued."
                )
            numerator = numerator + carried[0].to(numerator.dtype)
            denominator = denominator + carried[1].to(denominator.dtype)
        value = torch.where(denominator > 0, numerator / denominator.clamp_min(1.0), scores)
        self.outgoing[gate] = (numerator[:, -1:].detach(), denominator[:, -1:].detach())
        return value, value[:, -1:]


class GateContextCapture:
    """Forward pre- and post-hook on the top-level model: builds the `GateContext` of each call and stores the
    gates' running sums on the returned KV cache.

    Gates are found through the module the hook is called on, so the hook stays right after `copy.deepcopy`. The
    context stays on the gates after the pass, so gradient checkpointing recomputes the same gates.
    """

    def __init__(self, model: nn.Module) -> None:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()]
        self.positions = {name: params.index(name) for name in ("attention_mask", *_CACHE_ARGUMENTS) if name in params}
        self.causal = any(getattr(m, "is_causal", False) for m in model.modules())
        self.context: Optional[GateContext] = None

    def _argument(self, args: tuple, kwargs: dict, name: str) -> Any:
        if kwargs.get(name) is not None:
            return kwargs[name]
        index = self.positions.get(name)
        return args[index] if index is not None and index < len(args) else None

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        cache = next((c for c in (self._argument(args, kwargs, n) for n in _CACHE_ARGUMENTS) if c is not None), None)
        past = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
        carried = getattr(cache, CACHE_ATTRIBUTE, None) if past else None
        if carried is not None and carried.length != past:
            raise RuntimeError(
                f"The KV cache holds {past} tokens but its UniPELT gate sums cover {carried.length}: a cache cropped "
                "or extended outside this model cannot be continued with learned gates."
            )
        mask = token_mask_of(self._argument(args, kwargs, "attention_mask"))
        self.context = GateContext(mask, self.causal, past, carried)
        for gate in module.modules():
            if isinstance(gate, Gate):
                gate.context = self.context

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        cache = next((c for c in (getattr(output, n, None) for n in _CACHE_ARGUMENTS) if c is not None), None)
        if self.causal and self.context is not None and hasattr(cache, "get_seq_length"):
            attach_sums(cache, GateSums(int(cache.get_seq_length()), dict(self.context.outgoing)))

    @classmethod
    def install(cls, model: nn.Module) -> None:
        """Register the hooks on `model` once."""
        if any(isinstance(getattr(h, "__self__", None), cls) for h in model._forward_pre_hooks.values()):
            return
        capture = cls(model)
        model.register_forward_pre_hook(capture.before, with_kwargs=True)
        model.register_forward_hook(capture.after, with_kwargs=True)

    @classmethod
    def remove_all(cls, model: nn.Module) -> None:
        """Drop the hooks (after unloading)."""
        for hooks, with_kwargs in (
            (model._forward_pre_hooks, model._forward_pre_hooks_with_kwargs),
            (model._forward_hooks, model._forward_hooks_with_kwargs),
        ):
            for key in [k for k, h in hooks.items() if isinstance(getattr(h, "__self__", None), cls)]:
                del hooks[key]
                with_kwargs.pop(key, None)
