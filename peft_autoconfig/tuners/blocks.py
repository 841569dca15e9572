"""The five PET blocks (LoRA, serial and parallel adapter, prefix, BitFit bias) and the gate, each an `nn.Module`
with an analytic parameter count.

The `num_parameters` static methods are the single source of truth for cost: `plan.count_trainable_parameters` sums
them without building a model, and tests check the sum against the real count after `get_peft_model`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

NonLinearity = Literal["relu", "gelu", "tanh", "silu"]
NON_LINEARITIES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class Gate(nn.Module):
    """UniPELT gate: `sigmoid(Linear(in, 1)(x))` averaged over tokens, one scalar per example.

    Which tokens are averaged is decided by `context` (a `unipelt.context.GateContext` set on every forward pass by
    the UniPELT tuner): the real tokens of the sequence for encoders, a causal running mean (one value per position)
    for decoders; without a context, every token of the input. The per-example value is kept in `last_value`
    (detached, shape `(batch,)`) so users can inspect which modules a task uses. `force` pins the gate to a constant
    (0 switches its module off exactly); `None` means learned.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 1)
        self.last_value: torch.Tensor | None = None
        self.force: float | None = None
        self.context: Any = None

    @staticmethod
    def num_parameters(in_features: int) -> int:
        return in_features + 1

    @property
    def per_position(self) -> bool:
        """True when the gate has one value per position (causal running mean), not one per example."""
        return bool(getattr(self.context, "causal", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gate as `(batch, 1, 1)` (`(batch, seq, 1)` per position) for inputs `(batch, seq, features)`."""
        if self.force is not None:
            value = summary = torch.full((x.shape[0], 1, 1), float(self.force), dtype=x.dtype, device=x.device)
        else:
            scores = torch.sigmoid(self.linear(x.to(self.linear.weight.dtype)))
            if self.context is None:
                value = summary = scores.mean(dim=-2, keepdim=True)
            else:
                value, summary = self.context.reduce(self, scores)
            value = value.to(x.dtype)
        self.last_value = summary.detach().reshape(-1)
        return value


def _maybe_gate(features: int, gated: bool) -> Gate | None:
    return Gate(features) if gated else None


class Bottleneck(nn.Module):
    """Bottleneck adapter `up(act(down(x)))` (Houlsby/Pfeiffer serial, He et al. parallel).

    `up` starts at zero, so a fresh adapter adds exactly nothing. With `gated`, the output is scaled by a gate
    that reads the adapter's input.
    """

    def __init__(self, hidden_size: int, size: int, non_linearity: NonLinearity = "relu", gated: bool = False) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"Bottleneck `size` must be positive, got {size}.")
        self.down = nn.Linear(hidden_size, size)
        self.act = NON_LINEARITIES[non_linearity]()
        self.up = nn.Linear(size, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.gate = _maybe_gate(hidden_size, gated)

    @staticmethod
    def num_parameters(hidden_size: int, size: int, gated: bool = False) -> int:
        if size <= 0:
            return 0
        return 2 * hidden_size * size + size + hidden_size + (Gate.num_parameters(hidden_size) if gated else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(x)))
        if self.gate is not None:
            out = out * self.gate(x)
        return out


class LoraDelta(nn.Module):
    """Low-rank update `B(A(dropout(x))) * scaling` (Hu et al.); `B` starts at zero.

    With `gated`, a gate on the layer input replaces `scaling` (UniPELT), which makes the delta input-dependent and
    therefore not mergeable into the base weight.
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, scaling: float, dropout: float = 0.0, gated: bool = False
    ) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA `rank` must be positive, got {rank}.")
        self.rank = rank
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)
        self.gate = _maybe_gate(in_features, gated)

    @staticmethod
    def num_parameters(in_features: int, out_features: int, rank: int, gated: bool = False) -> int:
        if rank <= 0:
            return 0
        return rank * (in_features + out_features) + (Gate.num_parameters(in_features) if gated else 0)

    @property
    def mergeable(self) -> bool:
        return self.gate is None

    def delta_weight(self) -> torch.Tensor:
        """`scaling * B @ A`, shaped like an `nn.Linear` weight `(out, in)`."""
        return (self.B.weight @ self.A.weight) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.B(self.A(self.dropout(x)))
        if self.gate is not None:
            return out * self.gate(x)
        return out * self.scaling


class PrefixProjection(nn.Module):
    """MLP reparameterisation of one layer's prefix (Li & Liang 2021; UniPELT; AutoPEFT's prefix bottleneck).

    `up(tanh(down(embedding)))` gives `(length, 2 * num_kv_heads * head_dim)`: keys then values. It exists only
    while training; its owning `PrefixKV` saves the folded keys/values instead of these weights, so this module's
    own `_save_to_state_dict` writes nothing. `up` is rescaled at creation so the first prefix has std `init_std`.
    """

    def __init__(self, length: int, hidden_size: int, projection_size: int, out_features: int, init_std: float) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(length, hidden_size))
        down, up = nn.Linear(hidden_size, projection_size), nn.Linear(projection_size, out_features)
        self.down_weight, self.down_bias = nn.Parameter(down.weight.data), nn.Parameter(down.bias.data)
        self.up_weight, self.up_bias = nn.Parameter(up.weight.data), nn.Parameter(up.bias.data)
        with torch.no_grad():
            scale = init_std / self().std().clamp_min(torch.finfo(torch.float32).tiny)
            self.up_weight.mul_(scale)
            self.up_bias.mul_(scale)

    @staticmethod
    def num_parameters(length: int, hidden_size: int, projection_size: int, out_features: int) -> int:
        return length * hidden_size + (hidden_size + 1) * projection_size + (projection_size + 1) * out_features

    def forward(self) -> torch.Tensor:
        hidden = torch.tanh(nn.functional.linear(self.embedding, self.down_weight, self.down_bias))
        return nn.functional.linear(hidden, self.up_weight, self.up_bias)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        """Nothing: the owning `PrefixKV` saves the folded keys/values in place of these training-only weights."""


class PrefixKV(nn.Module):
    """Trainable per-layer prefix keys and values, `(num_kv_heads, length, head_dim)` each.

    They are prepended to the attention's keys and values after the model's own projections (and after rotary
    embeddings), so they count per key/value head, which makes grouped-query attention cheaper. With `gated`, a gate
    reading the attention input scales both prefix keys and values (UniPELT).

    With `projection_size > 0` the keys/values are produced by a per-layer `PrefixProjection` MLP while training.
    The state dict always holds the flat `key`/`value` (folded on save), so a saved adapter has the flat size and
    loading one folds this block in place (`fold_projection`). Both modes start with entries of std `init_std`.
    """

    def __init__(
        self,
        length: int,
        num_kv_heads: int,
        head_dim: int,
        hidden_size: int,
        gated: bool = False,
        init_std: float = 0.02,
        projection_size: int = 0,
    ) -> None:
        super().__init__()
        if length <= 0:
            raise ValueError(f"Prefix `length` must be positive, got {length}.")
        if projection_size < 0:
            raise ValueError(f"Prefix `projection_size` must be >= 0 (0 = flat), got {projection_size}.")
        if not init_std > 0:
            raise ValueError(f"Prefix `init_std` must be positive, got {init_std}.")
        self.length = length
        self.shape = (num_kv_heads, length, head_dim)
        self.projection: PrefixProjection | None = None
        if projection_size:
            self.projection = PrefixProjection(length, hidden_size, projection_size, 2 * num_kv_heads * head_dim, init_std)
        else:
            self.key = nn.Parameter(torch.randn(self.shape) * init_std)
            self.value = nn.Parameter(torch.randn(self.shape) * init_std)
        self.gate = _maybe_gate(hidden_size, gated)
        self.pending_gate: torch.Tensor | None = None
        self.token_keep: torch.Tensor | None = None
        """Bool `(length,)` mask of the prefix tokens the attention sees (structured pruning, `tuners/units.py`);
        None = all. The weights and the saved state keep every token."""

    @staticmethod
    def num_parameters(length: int, num_kv_heads: int, head_dim: int, hidden_size: int, gated: bool = False) -> int:
        """Saved (flat) size: what the adapter file holds and the search's parameter objective counts."""
        if length <= 0:
            return 0
        return 2 * length * num_kv_heads * head_dim + (Gate.num_parameters(hidden_size) if gated else 0)

    @staticmethod
    def num_training_parameters(
        length: int, num_kv_heads: int, head_dim: int, hidden_size: int, gated: bool = False, projection_size: int = 0
    ) -> int:
        """Parameters trained before folding: the MLP's instead of the flat keys/values when `projection_size > 0`."""
        if length <= 0 or projection_size <= 0:
            return PrefixKV.num_parameters(length, num_kv_heads, head_dim, hidden_size, gated)
        mlp = PrefixProjection.num_parameters(length, hidden_size, projection_size, 2 * num_kv_heads * head_dim)
        return mlp + (Gate.num_parameters(hidden_size) if gated else 0)

    def training_surplus(self) -> int:
        """How many more parameters this block trains than it saves: the MLP's minus the flat keys/values (0 when
        flat or frozen). Callers that count `requires_grad` parameters subtract it to report the saved size."""
        if self.projection is None:
            return 0
        trained = sum(getattr(p, "ds_numel", p.numel()) for p in self.projection.parameters() if p.requires_grad)
        return trained - 2 * math.prod(self.shape) if trained else 0

    def flat_keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix keys and values, `(num_kv_heads, length, head_dim)` each, from either mode."""
        if self.projection is None:
            return self.key, self.value
        kv_heads, length, head_dim = self.shape
        out = self.projection().reshape(length, 2, kv_heads, head_dim).permute(1, 2, 0, 3)
        return out[0], out[1]

    @torch.no_grad()
    def fold_projection(self) -> bool:
        """Replace the MLP by the flat keys/values it gives now (same outputs); False if already flat."""
        if self.projection is None:
            return False
        key, value = self.flat_keys_values()
        trainable = any(p.requires_grad for p in self.projection.parameters())
        self.projection = None
        self.key = nn.Parameter(key.clone(memory_format=torch.contiguous_format), requires_grad=trainable)
        self.value = nn.Parameter(value.clone(memory_format=torch.contiguous_format), requires_grad=trainable)
        return True

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.projection is not None:
            key, value = (t.detach().clone(memory_format=torch.contiguous_format) for t in self.flat_keys_values())
            destination[prefix + "key"], destination[prefix + "value"] = key, value

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """A saved prefix is flat: loading one folds the MLP first (its child is then no longer visited)."""
        if self.projection is not None and prefix + "key" in state_dict:
            self.fold_projection()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def observe_attention_input(self, hidden_states: torch.Tensor) -> None:
        """Compute the gate from the attention input; `keys_values` uses it in the same forward pass."""
        if self.gate is not None:
            self.pending_gate = self.gate(hidden_states)

    def keys_values(
        self, batch_size: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Prefix keys and values `(batch, num_kv_heads, length, head_dim)`, and an attention bias or None.

        A per-example gate scales the keys and values. A per-position gate (decoders) cannot scale keys shared by
        every query, so it is returned as a bias `log(gate)` `(batch, 1, query, 1)` to add to the scores of this
        prefix: each position attends to the prefix with weight multiplied by its own gate.
        """
        key, value = self.flat_keys_values()
        if self.token_keep is not None:
            keep = self.token_keep.to(key.device)
            key, value = key[:, keep], value[:, keep]
        key = key.to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        value = value.to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        if self.gate is None:
            return key, value, None
        gate = self.pending_gate
        if gate is None:
            raise RuntimeError("The prefix gate was not computed: the attention input did not pass the holder.")
        self.pending_gate = None
        if self.gate.per_position:
            return key, value, torch.log(gate.to(dtype).clamp_min(torch.finfo(dtype).tiny)).unsqueeze(1)
        gate = gate.reshape(-1, 1, 1, 1).to(dtype)
        return key * gate, value * gate, None


class BiasDelta(nn.Module):
    """BitFit (Ben Zaken et al., 2022): a trainable shift of one module's bias, `(out_features,)`, starting at zero.

    It is a *delta* added to the wrapped module's output, not a trainable copy of the base bias, so the base model
    stays untouched (adapters can be switched, deleted and unloaded like any other block) and merging is exact:
    `base.bias += delta`. Works on projections without a bias (Llama) too, which then cannot be merged. Same idea as
    peft's `bias="all"` option and AdapterHub's `BitFit`, but per layer and module type and saved with the adapter.
    """

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(out_features))

    @staticmethod
    def num_parameters(out_features: int, present: bool = True) -> int:
        return out_features if present else 0

    def forward(self) -> torch.Tensor:
        return self.delta
