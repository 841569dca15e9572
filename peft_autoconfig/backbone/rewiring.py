"""Network rewiring (DynaBERT, Hou et al. 2020): sort each layer's FFN units and attention heads by importance, so
that the search space's slices ("the first k units of a layer", "the first h heads") keep the most important ones.

Without it a slice keeps units in the pre-trained model's arbitrary order. Measured on MiniLM (benchmarks/RESULTS.md,
section 12): on the same trained super-network, the first w units of every layer score 3-6 points below the w units
with the highest Taylor importance, at every width below the full one.

`rewire` permutes, in place, the rows of the up projections (and their biases), the columns of the down projection,
the rows of the query/key/value projections by head (whole key/value groups for grouped-query attention) and the
columns of the attention output: the model computes exactly what it computed before. LoRA layers (a LoRA super-network)
are permuted with their base weights, and so are the optimizer's moment estimates, so training can go on across the
rewiring (`RewireAfterWarmup`, which the sandwich trainer calls after its largest-only warm-up). The permutation is
saved beside the super-network (`rewiring.json`), because a LoRA super-network's adapter is merged into a pre-trained
model that `apply_rewiring` has to rewire first, and a stand-alone run of a searched sub-network must start from the
same units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .baselines import Importance, magnitude_importance, taylor_importance
from .masking import block_list
from .space import Dims, family_for

REWIRING_FILE = "rewiring.json"
REWIRE_IMPORTANCE: tuple[str, ...] = ("taylor", "magnitude")


@dataclass(frozen=True)
class Rewiring:
    """Per layer, the old index of each new unit (`units[layer][new] = old`) and of each new key/value group."""

    units: list[list[int]]
    groups: list[list[int]]

    @classmethod
    def from_importance(cls, importance: Importance, dims: Dims) -> "Rewiring":
        """Units and key/value groups (summed head scores) in descending importance (stable: ties keep their order)."""
        group = dims.num_heads // dims.num_key_value_heads
        units = [torch.argsort(row, descending=True, stable=True).tolist() for row in importance.units]
        groups = [torch.argsort(row.reshape(-1, group).sum(dim=1), descending=True, stable=True).tolist()
                  for row in importance.heads]
        return cls(units, groups)

    def save(self, directory: str | Path) -> None:
        Path(directory, REWIRING_FILE).write_text(json.dumps({"units": self.units, "groups": self.groups}) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Optional["Rewiring"]:
        """The rewiring saved in `directory`, or None when the super-network there was not rewired."""
        path = Path(directory, REWIRING_FILE)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(data["units"], data["groups"])


def _tensors(module: nn.Module, out: bool) -> list[tuple[nn.Parameter, int]]:
    """The parameters of a linear layer (or a peft LoRA layer around one) indexed by its outputs (`out`) or inputs,
    each with the dimension to permute."""
    base = getattr(module, "base_layer", module)
    found = [(base.weight, 0 if out else 1)]
    if out and base.bias is not None:
        found.append((base.bias, 0))
    lora = getattr(module, "lora_B" if out else "lora_A", None)
    if lora is not None:
        found += [(layer.weight, 0 if out else 1) for layer in lora.values()]
    return found


def _permute(module: nn.Module, index: torch.Tensor, out: bool, optimizer_state: Optional[dict]) -> None:
    for parameter, dim in _tensors(module, out):
        with torch.no_grad():
            parameter.copy_(parameter.index_select(dim, index.to(parameter.device)))
        state = optimizer_state.get(parameter, {}) if optimizer_state is not None else {}
        for name, value in state.items():  # Adam's moments follow their weights
            if torch.is_tensor(value) and value.shape == parameter.shape:
                state[name] = value.index_select(dim, index.to(value.device))


def rewire(model: nn.Module, rewiring: Rewiring, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Apply `rewiring` to `model` (a transformers model or a peft model around one) in place; its outputs do not
    change. With `optimizer`, its per-parameter state is permuted too."""
    family, dims = family_for(model.config), Dims.from_config(model.config)
    holder, name = block_list(model, family)
    blocks = getattr(holder, name)
    found = (len(rewiring.units), len(rewiring.units[0]), len(rewiring.groups[0])) if rewiring.units else (0, 0, 0)
    expected = (len(blocks), dims.intermediate_size, dims.num_key_value_heads)
    if found != expected:
        raise ValueError(f"the rewiring is for (layers, FFN units, key/value heads) = {found}; this model has "
                         f"{expected}: it comes from another model.")
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    state = inner.state if inner is not None else None
    group = dims.num_heads // dims.num_key_value_heads
    span = torch.arange(dims.head_dim)
    for block, units, groups in zip(blocks, rewiring.units, rewiring.groups):
        units = torch.tensor(units)
        for path in family.intermediate:
            _permute(block.get_submodule(path), units, True, state)
        _permute(block.get_submodule(family.ffn_output), units, False, state)
        groups = torch.tensor(groups)
        heads = (groups[:, None] * group + torch.arange(group)).flatten()
        query = (heads[:, None] * dims.head_dim + span).flatten()
        key_value = (groups[:, None] * dims.head_dim + span).flatten()
        _permute(block.get_submodule(family.query), query, True, state)
        _permute(block.get_submodule(family.key), key_value, True, state)
        _permute(block.get_submodule(family.value), key_value, True, state)
        _permute(block.get_submodule(family.attention_output), query, False, state)


def apply_rewiring(model: nn.Module, directory: str | Path) -> nn.Module:
    """`model` rewired as the super-network saved in `directory` was (unchanged if it was not rewired)."""
    rewiring = Rewiring.load(directory)
    if rewiring is not None:
        rewire(model, rewiring)
    return model


class RewireAfterWarmup:
    """The sandwich trainer's `before_sandwich` hook: score units and heads on `batches` training batches of the
    warmed-up model (`importance`: "taylor" or "magnitude"), rewire the model and the optimizer's state, and save
    the rewiring to `directory`. Under torch.distributed the scores are summed over processes first, so every
    process applies the same permutation."""

    def __init__(self, importance: str, batches: int, directory: str | Path) -> None:
        if importance not in REWIRE_IMPORTANCE:
            raise ValueError(f"`supernet.rewire.importance` {importance!r} is not allowed; "
                             f"allowed: {list(REWIRE_IMPORTANCE)}.")
        self.importance, self.batches, self.directory = importance, batches, Path(directory)

    def scores(self, trainer: Any) -> Importance:
        if self.importance == "magnitude":
            return magnitude_importance(trainer.model)
        batches = []
        for batch in trainer.get_train_dataloader():
            batches.append(batch)
            if len(batches) == self.batches:
                break
        return taylor_importance(trainer.model, batches)

    def __call__(self, trainer: Any) -> Rewiring:
        scores = self.scores(trainer)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in (scores.heads, scores.units):
                device = next(trainer.model.parameters()).device
                summed = tensor.to(device)
                torch.distributed.all_reduce(summed)
                tensor.copy_(summed.cpu())
        rewiring = Rewiring.from_importance(scores, Dims.from_config(trainer.model.config))
        rewire(trainer.model, rewiring, trainer.optimizer)
        if trainer.is_world_process_zero():
            self.directory.mkdir(parents=True, exist_ok=True)
            rewiring.save(self.directory)
        return rewiring
