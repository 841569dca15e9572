"""The configurations of a pruning run: the maximal one that is trained and pruned, and those read off its masks."""

from __future__ import annotations

from typing import Any

from ...tuners.mixed import MixedPetConfig
from ...tuners.plan import count_trainable_parameters
from ...tuners.units import KIND_FIELDS, UnitMasks


def maximal_config(space: Any) -> tuple[MixedPetConfig, dict[str, Any]]:
    """The space's largest configuration with per-layer sizes and a flat prefix (what is trained and pruned), and
    the keyword arguments shared by every configuration read off it (the space's fixed fields and targets)."""
    largest = space.decode(space.largest_point())
    shared: dict[str, Any] = dict(space.spec.fixed)
    shared["task_type"] = space.task_type
    if largest.target_modules is not None:
        shared["target_modules"] = list(largest.target_modules)
    if largest.bias_targets is not None:
        shared["bias_targets"] = list(largest.bias_targets)
    sizes = {
        field: {layer: largest.size(field, layer) for layer in range(space.num_layers) if largest.size(field, layer)}
        for field in KIND_FIELDS.values()
    }
    super_config = MixedPetConfig(**{**shared, **{f: s or 0 for f, s in sizes.items()}, "prefix_projection_size": 0})
    return super_config, shared


def config_from_masks(masks: UnitMasks, shared: dict[str, Any], model_config: Any) -> MixedPetConfig:
    """The standard `MixedPetConfig` of the kept units (per-layer sizes); its analytic count equals `masks.cost()`."""
    sizes = masks.sizes()
    kwargs = {**shared, **{field: per_layer or 0 for field, per_layer in sizes.items()}}
    if not sizes["lora_rank"]:
        kwargs.pop("target_modules", None)
    config = MixedPetConfig(**kwargs)
    count = count_trainable_parameters(config, model_config)
    if count != masks.cost():
        raise RuntimeError(f"pruned config counts {count:,} parameters but the kept units {masks.cost():,}: a bug.")
    return config
