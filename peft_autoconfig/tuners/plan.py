"""Which blocks go on which module, and what they cost: one plan for the tuner (injection) and the analytic count.

`module_plans` lists, for a config and a model config, every module that receives blocks together with a
`BlockPlan`. The tuner builds exactly these blocks and `count_trainable_parameters` sums their `num_parameters`, so
the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..architectures import ArchitectureSpec, ModelDims, dims_for, spec_for
from .blocks import BiasDelta, Bottleneck, LoraDelta, PrefixKV

if TYPE_CHECKING:
    from .mixed.config import MixedPetConfig


@dataclass(frozen=True)
class BlockPlan:
    """The blocks of one adapter on one leaf module (sizes 0 = absent)."""

    in_features: int
    out_features: int
    lora_rank: int = 0
    serial_size: int = 0
    parallel_size: int = 0
    prefix_length: int = 0
    bias: bool = False
    hidden_size: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    gate_lora: bool = False
    gate_serial: bool = False
    gate_parallel: bool = False
    gate_prefix: bool = False
    prefix_projection_size: int = 0
    prefix_init_std: float = 0.02

    @property
    def empty(self) -> bool:
        return not (self.lora_rank or self.serial_size or self.parallel_size or self.prefix_length or self.bias)

    def num_parameters(self) -> int:
        return (
            LoraDelta.num_parameters(self.in_features, self.out_features, self.lora_rank, self.gate_lora)
            + Bottleneck.num_parameters(self.out_features, self.serial_size, self.gate_serial)
            + Bottleneck.num_parameters(self.out_features, self.parallel_size, self.gate_parallel)
            + PrefixKV.num_parameters(
                self.prefix_length, self.num_kv_heads, self.head_dim, self.hidden_size, self.gate_prefix
            )
            + BiasDelta.num_parameters(self.out_features, self.bias)
        )

    def num_training_parameters(self) -> int:
        """Parameters trained before folding (differs from `num_parameters` only for an MLP-reparameterised prefix)."""
        prefix_flat = PrefixKV.num_parameters(
            self.prefix_length, self.num_kv_heads, self.head_dim, self.hidden_size, self.gate_prefix
        )
        prefix_training = PrefixKV.num_training_parameters(
            self.prefix_length, self.num_kv_heads, self.head_dim, self.hidden_size, self.gate_prefix,
            self.prefix_projection_size,
        )
        return self.num_parameters() - prefix_flat + prefix_training


def check_layers_exist(config: MixedPetConfig, dims: ModelDims) -> None:
    """Raise if the config names a layer the model does not have."""
    highest = config.max_layer_index()
    if highest >= dims.num_layers:
        raise ValueError(
            f"Layer index {highest} is out of range: the model has {dims.num_layers} layers "
            f"(allowed indices 0..{dims.num_layers - 1}). Check `layers_to_transform` and per-layer sizes."
        )


def plan_for(
    config: MixedPetConfig, spec: ArchitectureSpec, dims: ModelDims, layer: int, path: str
) -> BlockPlan | None:
    """The blocks that `config` puts on the module at `path` inside `layer`, or None."""
    sites = spec.block_sites(dims)
    if path not in sites:
        return None
    fan_in, fan_out = sites[path]
    lora_targets = spec.resolve_lora_targets(config.target_modules)
    serial_size = config.block_size("serial_adapter_size", layer, dims)
    # the site is only resolved (and a placement the family lacks only refused) where a serial adapter exists
    serial_here = serial_size > 0 and path == spec.serial_adapter_site(config.serial_adapter_placement)
    bias_here = config.block_size("bias_tuning", layer, dims) > 0 and path in spec.resolve_bias_targets(
        config.bias_targets
    )
    plan = BlockPlan(
        in_features=fan_in,
        out_features=fan_out,
        lora_rank=config.block_size("lora_rank", layer, dims) if path in lora_targets else 0,
        serial_size=serial_size if serial_here else 0,
        parallel_size=config.block_size("parallel_adapter_size", layer, dims) if path == spec.ffn_output else 0,
        prefix_length=config.block_size("prefix_length", layer, dims) if path == spec.prefix_holder_path else 0,
        bias=bias_here,
        hidden_size=dims.hidden_size,
        num_kv_heads=dims.num_kv_heads,
        head_dim=dims.head_dim,
        gate_lora=config.gated("lora"),
        gate_serial=config.gated("serial"),
        gate_parallel=config.gated("parallel"),
        gate_prefix=config.gated("prefix"),
        prefix_projection_size=config.prefix_projection_size,
        prefix_init_std=config.prefix_init_std,
    )
    return None if plan.empty else plan


def module_plans(config: MixedPetConfig, model_config: Any) -> dict[tuple[int, str], BlockPlan]:
    """Every (layer, path inside the layer) that receives blocks, with its plan. Needs no model weights."""
    spec = spec_for(model_config)
    dims = dims_for(model_config)
    check_layers_exist(config, dims)
    plans: dict[tuple[int, str], BlockPlan] = {}
    for layer in range(dims.num_layers):
        for path in spec.block_sites(dims):
            plan = plan_for(config, spec, dims, layer, path)
            if plan is not None:
                plans[(layer, path)] = plan
    return plans


def count_trainable_parameters(config: MixedPetConfig, model_config: Any) -> int:
    """Trainable PET parameters of `config` (a `MixedPetConfig`/`UniPELTConfig`) on a model with `model_config`.

    No model is built; equals the real count of PET parameters after `get_peft_model` (heads and `modules_to_save`
    excluded). With unstructured `weight_masks`, the masked-out weights are not counted (the non-zero weights are).
    """
    total = sum(plan.num_parameters() for plan in module_plans(config, model_config).values())
    masks = getattr(config, "weight_masks", None)
    if masks is not None:
        from .weight_masks import masked_out

        total -= masked_out(masks)
    return total


def count_training_parameters(config: Any, model_config: Any) -> int:
    """PET parameters trained before folding: `count_trainable_parameters` except that a prefix with
    `prefix_projection_size > 0` counts its MLP instead of its flat keys/values (the real `requires_grad` count
    right after `get_peft_model`, head excluded). The saved adapter has `count_trainable_parameters`."""
    return sum(plan.num_training_parameters() for plan in module_plans(config, model_config).values())
