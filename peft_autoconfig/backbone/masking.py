"""Run a sub-network of a model in place, sharing the model's weights (no copy): the super-network.

Heads are removed by zeroing their columns of the input of the attention output projection (a forward pre-hook),
FFN units by zeroing their columns of the input of the FFN down projection, and layers by running the encoder
over a `ModuleList` of the kept blocks only (the same module objects). So the masked model computes exactly what
the physically smaller exported model computes, and training it only updates the weights the sub-network uses.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .space import Dims, FamilySpec, SubNetwork, family_for
from ..subnetworks import InPlaceSwitch


def transformers_model(model: nn.Module) -> nn.Module:
    """The `transformers` model inside a peft model (LoRA on the backbone), else `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def block_list(model: nn.Module, family: FamilySpec) -> tuple[nn.Module, str]:
    """(the module holding the list of blocks, the list's attribute name)."""
    *parents, name = family.layers.split(".")
    holder = transformers_model(model).base_model
    for part in parents:
        holder = getattr(holder, part)
    return holder, name


class SuperNetwork(InPlaceSwitch):
    """The model's blocks with head and unit masks on hooks; `select(sub)` switches the active sub-network.

    Hooks are installed once (cheap to switch every step); `remove()` takes them off and restores all layers.
    `select(None)` runs the full model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.family = family_for(model.config)
        self.dims = Dims.from_config(model.config)
        self.holder, self.list_name = block_list(model, self.family)
        self.blocks: nn.ModuleList = getattr(self.holder, self.list_name)
        self.active: Optional[SubNetwork] = None
        self._head_masks: dict[int, torch.Tensor] = {}
        self._unit_masks: dict[int, torch.Tensor] = {}
        self._handles = []
        for index, block in enumerate(self.blocks):
            attention_out = block.get_submodule(self.family.attention_output)
            ffn_out = block.get_submodule(self.family.ffn_output)
            self._handles.append(attention_out.register_forward_pre_hook(self._hook(self._head_masks, index)))
            self._handles.append(ffn_out.register_forward_pre_hook(self._hook(self._unit_masks, index)))

    @staticmethod
    def _hook(masks: dict[int, torch.Tensor], index: int):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
            mask = masks.get(index)
            if mask is None:
                return None
            hidden = args[0]
            return (hidden * mask.to(device=hidden.device, dtype=hidden.dtype), *args[1:])

        return hook

    def select(self, sub: Optional[SubNetwork]) -> None:
        """Make `sub` (None = the full model) the network that the model's forward computes."""
        self._head_masks.clear()
        self._unit_masks.clear()
        self.holder.__dict__.pop(self.list_name, None)
        self.active = None
        if sub is None:
            return
        sub.validate(self.dims)
        d = self.dims
        for layer, heads, units in zip(sub.layers, sub.heads, sub.units):
            if len(heads) < d.num_heads:
                head_mask = torch.zeros(d.num_heads)
                head_mask[list(heads)] = 1.0
                self._head_masks[layer] = head_mask.repeat_interleave(d.head_dim)
            if len(units) < d.intermediate_size:
                unit_mask = torch.zeros(d.intermediate_size)
                unit_mask[list(units)] = 1.0
                self._unit_masks[layer] = unit_mask
        if len(sub.layers) < d.num_layers:
            # an instance attribute shadows the registered `ModuleList` in the forward pass only: parameters,
            # state dict and optimizer still see every block
            self.holder.__dict__[self.list_name] = nn.ModuleList([self.blocks[i] for i in sub.layers])
        self.active = sub

    def remove(self) -> None:
        """Take the hooks off and restore every layer: the model is the plain model again."""
        self.select(None)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
