"""`PetLayer`: the tuner layer that wraps one leaf (a projection or an output LayerNorm) and owns its blocks, keyed by
adapter name.

The layer logic serves both methods (mixed and UniPELT); gates are a flag on each block. Each method subclasses it
only to name its block containers under its own state-dict prefix (`mixed_pet_lora`, `unipelt_lora`, ...), as peft
expects one prefix per tuner. A projection may carry
several roles at once: LoRA (any target), serial/parallel adapter (feed-forward output projection) and prefix
holder (a projection inside attention, whose prefix the attention wrapper in `attention.py` reads), and BitFit bias
delta (any projection or bias-carrying LayerNorm).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, ClassVar, Iterator, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from transformers.pytorch_utils import Conv1D

from .blocks import BiasDelta, Bottleneck, LoraDelta, PrefixKV
from .plan import BlockPlan


class FeedForwardInputCapture:
    """Forward pre-hook on the parent of a feed-forward output projection: hands the feed-forward input to the
    `PetLayer` child named `child_name` (its parallel adapters read it).

    The hook finds the child through the module it is called on, never through a stored reference, so it stays
    right after `copy.deepcopy` and does nothing once the child is unloaded.
    """

    def __init__(self, parent: nn.Module, child_name: str, arg_index: int) -> None:
        self.child_name = child_name
        self.arg_index = arg_index
        params = [p for p in inspect.signature(parent.forward).parameters.values() if p.name != "self"]
        self.arg_name = params[arg_index].name if arg_index < len(params) else None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        child = getattr(module, self.child_name, None)
        if isinstance(child, PetLayer):
            child._ffn_input = args[self.arg_index] if len(args) > self.arg_index else kwargs.get(self.arg_name)

    @classmethod
    def install(cls, parent: nn.Module, child_name: str, arg_index: int) -> None:
        """Register the hook on `parent` once per child."""
        if any(isinstance(h, cls) and h.child_name == child_name for h in parent._forward_pre_hooks.values()):
            return
        parent.register_forward_pre_hook(cls(parent, child_name, arg_index), with_kwargs=True)

    @classmethod
    def remove_all(cls, model: nn.Module) -> None:
        """Drop every capture hook in `model` (after unloading)."""
        for module in model.modules():
            for key in [k for k, h in module._forward_pre_hooks.items() if isinstance(h, cls)]:
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)


BLOCK_KINDS: tuple[str, ...] = ("lora", "serial", "parallel", "prefix", "bias")
"""The block containers of a `PetLayer`, each an `nn.ModuleDict` keyed by adapter name, named `prefix + kind`."""


class PetLayer(nn.Module, BaseTunerLayer):
    """Wraps an `nn.Linear` (or GPT-2 `Conv1D`) and adds the blocks of each active adapter; wrapping an
    `nn.LayerNorm`, it holds only Pfeiffer-placed serial adapters and BitFit bias deltas.

    Abstract: a method's subclass sets `prefix` (its tuner's state-dict prefix); `adapter_layer_names` follows from it.
    """

    prefix: ClassVar[str] = ""
    adapter_layer_names: tuple[str, ...] = ()
    other_param_names: tuple[str, ...] = ("parallel_scaling",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.adapter_layer_names = tuple(cls.prefix + kind for kind in BLOCK_KINDS)

    def __init__(self, base_layer: nn.Module, adapter_name: str, plan: BlockPlan, **block_options: Any) -> None:
        super().__init__()
        if not self.prefix:
            raise TypeError("`PetLayer` is abstract: use a method's layer (`MixedPetLayer`, `UniPELTLayer`).")
        if not isinstance(base_layer, (nn.Linear, Conv1D, nn.LayerNorm)):
            raise TypeError(
                "peft_autoconfig blocks can wrap `nn.Linear`, `Conv1D` or (Pfeiffer serial adapter) `nn.LayerNorm` "
                f"modules, got {type(base_layer).__name__}."
            )
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.wraps_norm = isinstance(base_layer, nn.LayerNorm)
        for container in self.adapter_layer_names:
            setattr(self, container, nn.ModuleDict())
        self.parallel_scaling: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self._ffn_input: Optional[torch.Tensor] = None
        self.update_layer(adapter_name, plan, **block_options)

    def blocks(self, kind: str) -> nn.ModuleDict:
        """The container of block `kind` (one of `BLOCK_KINDS`): adapter name -> block."""
        return self._modules[self.prefix + kind]

    # -- creation ---------------------------------------------------------------------------------------------
    def update_layer(
        self,
        adapter_name: str,
        plan: BlockPlan,
        *,
        lora_scaling: float = 1.0,
        lora_dropout: float = 0.0,
        parallel_scaling: float = 4.0,
        non_linearity: str = "relu",
        inference_mode: bool = False,
    ) -> None:
        """Create the blocks of `adapter_name` described by `plan`; new blocks leave the output unchanged."""
        if plan.lora_rank:
            self.blocks("lora")[adapter_name] = LoraDelta(
                plan.in_features, plan.out_features, plan.lora_rank, lora_scaling, lora_dropout, gated=plan.gate_lora
            )
        if plan.serial_size:
            self.blocks("serial")[adapter_name] = Bottleneck(
                plan.out_features, plan.serial_size, non_linearity, gated=plan.gate_serial
            )
        if plan.parallel_size:
            self.blocks("parallel")[adapter_name] = Bottleneck(
                plan.out_features, plan.parallel_size, non_linearity, gated=plan.gate_parallel
            )
            self.parallel_scaling[adapter_name] = parallel_scaling
        if plan.prefix_length:
            self.blocks("prefix")[adapter_name] = PrefixKV(
                plan.prefix_length, plan.num_kv_heads, plan.head_dim, plan.hidden_size, gated=plan.gate_prefix,
                init_std=plan.prefix_init_std, projection_size=plan.prefix_projection_size,
            )
        if plan.bias:
            self.blocks("bias")[adapter_name] = BiasDelta(plan.out_features)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        ffn_input, self._ffn_input = self._ffn_input, None
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        active = list(self.active_adapters)
        bias = self._bias_delta(active)
        if self.wraps_norm:
            return self._pfeiffer_serial(x, result, active, bias)
        if bias is not None:  # first: the blocks below see the output of the re-biased module
            result = result + bias.to(result.dtype)
        lora_blocks, prefix_blocks = self.blocks("lora"), self.blocks("prefix")
        serial_blocks, parallel_blocks = self.blocks("serial"), self.blocks("parallel")
        for name in active:
            if name in prefix_blocks:
                prefix_blocks[name].observe_attention_input(x)
            if name in lora_blocks and name not in self.merged_adapters:
                lora = lora_blocks[name]
                result = result + lora(self._cast_input_dtype(x, lora.A.weight.dtype)).to(result.dtype)
        for name in active:
            if name in serial_blocks:
                serial = serial_blocks[name]
                result = result + serial(result.to(serial.down.weight.dtype)).to(result.dtype)
            if name in parallel_blocks:
                if ffn_input is None:
                    raise RuntimeError(
                        "The parallel adapter did not receive the feed-forward input: the feed-forward output "
                        "projection was called outside its parent module."
                    )
                parallel = parallel_blocks[name]
                delta = parallel(ffn_input.to(parallel.down.weight.dtype)) * self.parallel_scaling[name]
                result = result + delta.to(result.dtype)
        return result

    def _bias_delta(self, active: list[str]) -> Optional[torch.Tensor]:
        """The sum of the unmerged BitFit deltas of the active adapters, or None."""
        bias_blocks = self.blocks("bias")
        total: Optional[torch.Tensor] = None
        for name in active:
            if name in bias_blocks and name not in self.merged_adapters:
                delta = bias_blocks[name]()
                total = delta if total is None else total + delta
        return total

    def _pfeiffer_serial(
        self, x: torch.Tensor, normed: torch.Tensor, active: list[str], bias: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Serial adapters on the output LayerNorm: `x` is `h + residual`, `normed` is `LN(x)`; the adapters read
        `normed` and the layer returns `LN(x + sum of adapter outputs)` (AdapterHub's Pfeiffer/`SeqBnConfig`).

        A BitFit delta shifts the LayerNorm's bias: it is added to `normed` (which the adapters read) and to the
        final output, exactly what a merged `LN.bias += delta` computes."""
        if bias is not None:
            normed = normed + bias.to(normed.dtype)
        serial_blocks = self.blocks("serial")
        delta: Optional[torch.Tensor] = None
        for name in active:
            if name in serial_blocks:
                serial = serial_blocks[name]
                out = serial(normed.to(serial.down.weight.dtype)).to(x.dtype)
                delta = out if delta is None else delta + out
        if delta is None:
            return normed
        out = self.base_layer(x + delta)
        return out if bias is None else out + bias.to(out.dtype)

    # -- merging ----------------------------------------------------------------------------------------------
    def unmergeable_blocks(self, adapter_name: str) -> list[str]:
        """Names of the blocks of `adapter_name` in this layer that cannot be folded into the base weight."""
        blocks = []
        if adapter_name in self.blocks("serial"):
            blocks.append("serial adapter")
        if adapter_name in self.blocks("parallel"):
            blocks.append("parallel adapter")
        if adapter_name in self.blocks("prefix"):
            blocks.append("prefix")
        if adapter_name in self.blocks("lora") and not self.blocks("lora")[adapter_name].mergeable:
            blocks.append("gated LoRA")
        return blocks

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        delta = self.blocks("lora")[adapter_name].delta_weight()
        return delta.T if self.fan_in_fan_out else delta

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        adapter_names = check_adapters_to_merge(self, adapter_names)
        for name in adapter_names:
            refused = self.unmergeable_blocks(name)
            if refused:
                raise ValueError(
                    f"Cannot merge adapter {name!r}: its {', '.join(refused)} cannot be folded into the base weights "
                    "(only ungated LoRA can). Use `unload()` to remove the adapter, or keep the PEFT model."
                )
            has_lora, has_bias = name in self.blocks("lora"), name in self.blocks("bias")
            if not (has_lora or has_bias):
                continue
            base = self.get_base_layer()
            if has_bias and getattr(base, "bias", None) is None:
                raise ValueError(
                    f"Cannot merge adapter {name!r}: its BitFit delta needs a bias in {type(base).__name__}, which has "
                    "none. Keep the PEFT model, or leave this module out of `bias_targets`."
                )
            updates = []
            if has_lora:
                updates.append((base.weight, self.get_delta_weight(name).to(base.weight.dtype)))
            if has_bias:
                updates.append((base.bias, self.blocks("bias")[name].delta.detach().to(base.bias.dtype)))
            if safe_merge and not all(torch.isfinite(p.data + d).all() for p, d in updates):
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            for parameter, delta in updates:
                parameter.data += delta
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            base = self.get_base_layer()
            if name in self.blocks("lora"):
                base.weight.data -= self.get_delta_weight(name).to(base.weight.dtype)
            if name in self.blocks("bias"):
                base.bias.data -= self.blocks("bias")[name].delta.detach().to(base.bias.dtype)

    def unload_and_optionally_merge_module(
        self, merge: bool, safe_merge: bool, adapter_names: Optional[list[str]]
    ) -> nn.Module:
        """Called by peft's unload: merge if asked, drop the feed-forward hook, return the bare projection."""
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        self._ffn_input = None
        return self.get_base_layer()

    def __repr__(self) -> str:
        return "pet." + super().__repr__()


def located_pet_layers(model: nn.Module, spec: Any) -> Iterator[tuple[int, str, PetLayer]]:
    """Every `PetLayer` of `model` with its place, `(layer index, module path in the layer, layer module)`, as the
    architecture `spec` (`architectures.spec_for`) reads the qualified name; layers it cannot place are skipped.
    The one walk that gates (UniPELT, S3PET), unit masks (pruning) and slices (super-PET) share."""
    for name, module in model.named_modules():
        if isinstance(module, PetLayer):
            located = spec.split_key(name)
            if located is not None:
                yield located[0], located[1], module
