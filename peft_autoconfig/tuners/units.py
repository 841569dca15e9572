"""Structured units of a PET model, their masks and their first-order importance.

A *unit* is the smallest structure a per-layer `MixedPetConfig` can express:

| kind       | unit                                  | config field (per layer)  |
|------------|---------------------------------------|---------------------------|
| `lora`     | one rank, across every LoRA target    | `lora_rank`               |
| `serial`   | one bottleneck unit of the adapter    | `serial_adapter_size`     |
| `parallel` | one bottleneck unit of the adapter    | `parallel_adapter_size`   |
| `prefix`   | one prefix token (its key and value)  | `prefix_length`           |
| `bias`     | the layer's bias deltas (all targets) | `bias_tuning`             |

The units of one kind in one layer form a `UnitGroup`; a group whose units are all masked is the whole block removed
from that layer. `UnitMasks` masks units *without copying or slicing weights*: forward hooks on our blocks zero the
outputs of masked LoRA ranks (`A`'s output), bottleneck units (`down`'s output; every non-linearity we offer maps 0 to
0) and bias deltas, and `PrefixKV.token_keep` hides masked prefix tokens from attention. A masked unit then neither
changes the output nor receives a gradient, and `UnitMasks.remove()` restores the model exactly. The same groups can
serve a weight-sharing super-PET that evaluates sub-configurations by masking (set the masks, run inference).

`UnitImportance` accumulates Lawton et al.'s (2023) first-order score `sum |theta * dL/dtheta|` of each unit's
parameters from the current `.grad`s; `ImportanceCallback` does it after every backward pass of a `Trainer`
(`on_pre_optimizer_step`, i.e. on the accumulated and clipped gradients of each optimiser step).

Costs come from the blocks' own `num_parameters`, so `UnitMasks.cost()` equals `count_trainable_parameters` of the
config `UnitMasks.sizes()` describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .blocks import BiasDelta, Bottleneck, LoraDelta, PrefixKV
from .layer import located_pet_layers
from .plan import BlockPlan

UNIT_KINDS: tuple[str, ...] = ("lora", "serial", "parallel", "prefix", "bias")
KIND_FIELDS: dict[str, str] = {
    "lora": "lora_rank",
    "serial": "serial_adapter_size",
    "parallel": "parallel_adapter_size",
    "prefix": "prefix_length",
    "bias": "bias_tuning",
}
"""Unit kind -> the per-layer `MixedPetConfig` field its number of surviving units sets."""

GroupKey = tuple[int, str]
"""(layer index, unit kind)."""


@dataclass
class UnitGroup:
    """The units of one kind in one layer: the blocks that hold them, their plans, and the keep mask."""

    layer: int
    kind: str
    blocks: list[nn.Module]
    plans: list[BlockPlan]
    alive: torch.Tensor
    """Bool `(size,)`: which units are kept. Updated in place, so the hooks see every change."""
    paths: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.alive.numel())

    @property
    def num_alive(self) -> int:
        return int(self.alive.sum())

    def cost(self, n: int | None = None) -> int:
        """Analytic parameter count of this group with `n` units kept (default: the mask's count)."""
        n = self.num_alive if n is None else n
        if n <= 0:
            return 0
        if self.kind == "lora":
            return sum(LoraDelta.num_parameters(p.in_features, p.out_features, n, p.gate_lora) for p in self.plans)
        if self.kind in ("serial", "parallel"):
            gated = self.plans[0].gate_serial if self.kind == "serial" else self.plans[0].gate_parallel
            return Bottleneck.num_parameters(self.plans[0].out_features, n, gated)
        if self.kind == "prefix":
            p = self.plans[0]
            return PrefixKV.num_parameters(n, p.num_kv_heads, p.head_dim, p.hidden_size, p.gate_prefix)
        return sum(BiasDelta.num_parameters(p.out_features) for p in self.plans)

    @property
    def unit_cost(self) -> int:
        """Parameters one unit adds (the cost is affine in the number of units)."""
        return self.cost(1) if self.kind == "bias" else self.cost(2) - self.cost(1)

    @property
    def fixed_cost(self) -> int:
        """Parameters the block has whatever its size (an adapter's output bias); freed with its last unit."""
        return self.cost(1) - self.unit_cost

    def unit_scores(self) -> tuple[torch.Tensor, float]:
        """First-order importance `|theta * grad|` from the current gradients: per unit `(size,)` and the fixed part."""
        scores = torch.zeros(self.size, dtype=torch.float64)
        fixed = 0.0

        def taylor(parameter: torch.Tensor) -> torch.Tensor | None:
            if parameter.grad is None:
                return None
            return (parameter.detach() * parameter.grad.detach()).abs().double().cpu()

        for block in self.blocks:
            if self.kind == "lora":
                a, b = taylor(block.A.weight), taylor(block.B.weight)
                if a is not None:
                    scores += a.sum(1)
                if b is not None:
                    scores += b.sum(0)
            elif self.kind in ("serial", "parallel"):
                down_w, down_b = taylor(block.down.weight), taylor(block.down.bias)
                up_w, up_b = taylor(block.up.weight), taylor(block.up.bias)
                if down_w is not None:
                    scores += down_w.sum(1)
                if down_b is not None:
                    scores += down_b
                if up_w is not None:
                    scores += up_w.sum(0)
                if up_b is not None:
                    fixed += float(up_b.sum())
            elif self.kind == "prefix":
                if block.projection is not None:
                    raise ValueError("Unit importance needs a flat prefix (`prefix_projection_size` = 0).")
                for t in (taylor(block.key), taylor(block.value)):
                    if t is not None:
                        scores += t.sum((0, 2))
            else:
                t = taylor(block.delta)
                if t is not None:
                    scores += t.sum()
        return scores, fixed


class UnitMasks:
    """The unit groups of adapter `adapter_name` of a PEFT model of our tuners, with masks installed as hooks.

    `groups[(layer, kind)]` is a `UnitGroup`; set `group.alive` (in place) or call `set_alive`. Gated blocks
    (UniPELT) are refused: a gate's parameters belong to no unit.
    """

    def __init__(self, model: nn.Module, adapter_name: str = "default") -> None:
        tuner = getattr(model, "base_model", model)
        spec, plans = getattr(tuner, "_pet_spec", None), getattr(tuner, "_pet_plans", None)
        if spec is None or plans is None:
            raise TypeError("`UnitMasks` needs a PEFT model of the mixed method (`get_peft_model` with a MixedPetConfig).")
        self.adapter_name = adapter_name
        self.groups: dict[GroupKey, UnitGroup] = {}
        self._handles: list[Any] = []
        for layer, path, module in located_pet_layers(model, spec):
            if (layer, path) not in plans:
                continue
            for kind in UNIT_KINDS:
                blocks = module.blocks(kind)
                if adapter_name not in blocks:
                    continue
                block = blocks[adapter_name]
                if getattr(block, "gate", None) is not None:
                    raise ValueError(f"Cannot mask gated blocks (layer {layer}, {kind} on {path}): use an ungated config.")
                self._add(layer, kind, path, block, plans[(layer, path)])
        if not self.groups:
            raise ValueError(f"The model has no block of adapter {adapter_name!r} to mask.")
        for group in self.groups.values():
            self._install(group)

    def _add(self, layer: int, kind: str, path: str, block: nn.Module, plan: BlockPlan) -> None:
        size = {"lora": plan.lora_rank, "serial": plan.serial_size, "parallel": plan.parallel_size,
                "prefix": plan.prefix_length, "bias": 1}[kind]
        group = self.groups.get((layer, kind))
        if group is None:
            device = next(block.parameters()).device
            group = self.groups[(layer, kind)] = UnitGroup(
                layer, kind, [], [], torch.ones(size, dtype=torch.bool, device=device)
            )
        elif group.size != size:
            raise ValueError(f"Blocks of kind {kind} in layer {layer} disagree in size ({group.size} vs {size}).")
        group.blocks.append(block)
        group.plans.append(plan)
        group.paths.append(path)

    def _install(self, group: UnitGroup) -> None:
        def scale_by(mask_of: Callable[[], torch.Tensor]) -> Callable[..., torch.Tensor]:
            def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
                # the masks stay where they were made (the Trainer may move the model to an accelerator later)
                return output * mask_of().to(device=output.device, dtype=output.dtype)

            return hook

        for block in group.blocks:
            if group.kind == "lora":
                self._handles.append(block.A.register_forward_hook(scale_by(lambda g=group: g.alive)))
            elif group.kind in ("serial", "parallel"):
                self._handles.append(block.down.register_forward_hook(scale_by(lambda g=group: g.alive)))
                self._handles.append(block.register_forward_hook(scale_by(lambda g=group: g.alive.any())))
            elif group.kind == "prefix":
                block.token_keep = group.alive
            else:
                self._handles.append(block.register_forward_hook(scale_by(lambda g=group: g.alive.any())))

    # -- state ----------------------------------------------------------------------------------------------------
    def set_alive(self, key: GroupKey, alive: torch.Tensor) -> None:
        group = self.groups[key]
        if alive.shape != group.alive.shape:
            raise ValueError(f"Mask of group {key} must have shape {tuple(group.alive.shape)}, got {tuple(alive.shape)}.")
        group.alive.copy_(alive.to(torch.bool))

    def cost(self) -> int:
        """Analytic trainable parameters of the kept units (equals the count of the config of `sizes()`)."""
        return sum(group.cost() for group in self.groups.values())

    def max_cost(self) -> int:
        return sum(group.cost(group.size) for group in self.groups.values())

    def sizes(self) -> dict[str, dict[int, int]]:
        """Kept units per config field and layer (layers with none left out): the per-layer sizes of a config."""
        out: dict[str, dict[int, int]] = {KIND_FIELDS[kind]: {} for kind in UNIT_KINDS}
        for (layer, kind), group in sorted(self.groups.items()):
            if group.num_alive:
                out[KIND_FIELDS[kind]][layer] = group.num_alive
        return out

    def remove(self) -> None:
        """Drop every hook and prefix mask: the model computes as before masking (the weights were never touched)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for group in self.groups.values():
            if group.kind == "prefix":
                for block in group.blocks:
                    block.token_keep = None


class UnitImportance:
    """Accumulated first-order importance of every unit (and of each block's fixed part) of `masks`."""

    def __init__(self, masks: UnitMasks) -> None:
        self.masks = masks
        self.scores: dict[GroupKey, torch.Tensor] = {}
        self.fixed: dict[GroupKey, float] = {}
        self.steps = 0
        self.reset()

    def reset(self) -> None:
        self.scores = {key: torch.zeros(g.size, dtype=torch.float64) for key, g in self.masks.groups.items()}
        self.fixed = dict.fromkeys(self.masks.groups, 0.0)
        self.steps = 0

    @torch.no_grad()
    def accumulate(self) -> None:
        """Add `|theta * grad|` of the current gradients (call after backward, before the optimiser step)."""
        for key, group in self.masks.groups.items():
            scores, fixed = group.unit_scores()
            self.scores[key] += scores
            self.fixed[key] += fixed
        self.steps += 1


def importance_callback(importance: UnitImportance) -> Any:
    """A `transformers.TrainerCallback` that accumulates `importance` before every optimiser step."""
    from transformers import TrainerCallback

    class ImportanceCallback(TrainerCallback):
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            importance.accumulate()

    return ImportanceCallback()


class WeightImportance:
    """Accumulated first-order importance `|theta * grad|` of every single PET weight of an adapter (unstructured
    pruning), keyed like a mask file (`weight_masks.mask_key`)."""

    def __init__(self, model: nn.Module, adapter_name: str = "default") -> None:
        from .weight_masks import pet_parameters

        self.parameters = {key: parameter for key, (_, _, parameter) in pet_parameters(model, adapter_name).items()}
        if not self.parameters:
            raise ValueError(f"The model has no PET weight of adapter {adapter_name!r} to score.")
        self.scores: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.reset()

    def reset(self) -> None:
        self.scores = {key: torch.zeros(p.shape, dtype=torch.float64) for key, p in self.parameters.items()}
        self.steps = 0

    @torch.no_grad()
    def accumulate(self) -> None:
        for key, parameter in self.parameters.items():
            if parameter.grad is not None:
                self.scores[key] += (parameter.detach() * parameter.grad.detach()).abs().double().cpu()
        self.steps += 1


def select_weights(
    scores: dict[str, torch.Tensor], kept: dict[str, torch.Tensor], keep: int
) -> dict[str, torch.Tensor]:
    """Masks keeping the `keep` most important of the currently `kept` weights (all of them if fewer)."""
    keys = sorted(scores)
    dropped = torch.tensor(-1.0, dtype=torch.float64)  # below every score: never chosen again
    flat = torch.cat([torch.where(kept[k].cpu(), scores[k], dropped).flatten() for k in keys])
    available = int(sum(int(kept[k].sum()) for k in keys))
    keep = max(0, min(keep, available))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    if keep:
        chosen[torch.topk(flat, keep, sorted=False).indices] = True
    out, start = {}, 0
    for k in keys:
        n = scores[k].numel()
        out[k] = chosen[start:start + n].reshape(scores[k].shape)
        start += n
    return out
