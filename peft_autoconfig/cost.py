"""Analytic trainable-parameter count of a config for a model config: no model is built.

It sums `BlockPlan.num_parameters` over `module_plans`, the same plans the tuner injects, so it equals
the real count of PET parameters after `get_peft_model` (heads and `modules_to_save` excluded).
"""

from __future__ import annotations

from typing import Any

from .architectures import dims_for
from .tuners.plan import module_plans


def count_trainable_parameters(config: Any, model_config: Any) -> int:
    """Trainable PET parameters of `config` (a `MixedPetConfig`/`UniPELTConfig`) on a model with `model_config`."""
    return sum(plan.num_parameters() for plan in module_plans(config, model_config).values())


def count_training_parameters(config: Any, model_config: Any) -> int:
    """PET parameters trained before folding: `count_trainable_parameters` except that a prefix with
    `prefix_projection_size > 0` counts its MLP instead of its flat keys/values (the real `requires_grad` count
    right after `get_peft_model`, head excluded). The saved adapter has `count_trainable_parameters`."""
    return sum(plan.num_training_parameters() for plan in module_plans(config, model_config).values())


def base_parameter_count(model_config: Any) -> int:
    """Approximate parameter count of the transformer layers (attention + FFN projections, weights and biases).

    Used only to express PET sizes as a percentage of the body; embeddings and heads are not included.
    """
    from .architectures import spec_for

    spec, dims = spec_for(model_config), dims_for(model_config)
    per_layer = sum(fan_in * fan_out + fan_out for fan_in, fan_out in spec.shapes(dims).values())
    return per_layer * dims.num_layers
