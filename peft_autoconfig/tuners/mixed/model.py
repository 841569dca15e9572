"""`MixedPetModel`: injects `MixedPetLayer`s where `module_plans` says; everything else is peft's `BaseTuner`."""

from __future__ import annotations

import re
from typing import Any, Optional

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from ...architectures import UnsupportedModelError, spec_for
from ...peft_types import MIXED_PET, state_dict_prefix
from ..attention import base_implementation_name, prefix_implementation_name, register_prefix_attention
from ..blocks import PrefixKV
from ..layer import BLOCK_KINDS, FeedForwardInputCapture, PetLayer
from ..plan import BlockPlan, module_plans
from ..weight_masks import check_state_dict_masks, install_from_config

LEGACY_PREFIX = "pet_"
"""The state-dict prefix that both methods shared before each got its own (adapters saved by wave 1)."""
_LEGACY_CONTAINER = re.compile(rf"\.{LEGACY_PREFIX}({'|'.join(BLOCK_KINDS)})(?=\.)")


class MixedPetLayer(PetLayer):
    """The mixed method's tuner layer: block containers `mixed_pet_lora`, `mixed_pet_serial`, ..."""

    prefix = state_dict_prefix(MIXED_PET)


class MixedPetModel(BaseTuner):
    """Tuner of the mixed composite method; created by `peft.get_peft_model` for a `MixedPetConfig`."""

    prefix: str = MixedPetLayer.prefix
    tuner_layer_cls: type[PetLayer] = MixedPetLayer
    target_module_mapping: dict[str, list[str]] = {}

    # -- planning -----------------------------------------------------------------------------------------------
    def _prepare_adapter_config(self, peft_config: PeftConfig, model_config: dict) -> PeftConfig:
        return peft_config

    def _prepare_model(self, peft_config: PeftConfig, model: nn.Module) -> None:
        """Resolve the plan of this adapter against the model; switch attention to the prefix wrapper if needed."""
        config = getattr(model, "config", None)
        if config is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no transformers `config`; peft_autoconfig needs a transformers model."
            )
        spec = spec_for(config)
        self._pet_spec = spec
        self._pet_plans: dict[tuple[int, str], BlockPlan] = module_plans(peft_config, config)
        if any(plan.prefix_length for plan in self._pet_plans.values()):
            register_prefix_attention()
            config._attn_implementation = prefix_implementation_name(config._attn_implementation)

    def _post_injection_hook(self, model: nn.Module, config: PeftConfig, adapter_name: str) -> None:
        """Apply the config's unstructured weight masks (`weight_masks`), if any."""
        super()._post_injection_hook(model, config, adapter_name)
        install_from_config(model, getattr(config, "weight_masks", None), adapter_name)

    def _check_target_module_exists(self, peft_config: PeftConfig, key: str) -> bool:
        located = self._pet_spec.split_key(key)
        return located is not None and located in self._pet_plans

    def _check_new_adapter_config(self, config: PeftConfig) -> None:
        super()._check_new_adapter_config(config)
        kinds = {type(c).__name__ for c in self.peft_config.values()}
        if len(kinds) > 1:
            raise ValueError(f"All adapters of one model must be of the same config class, got {sorted(kinds)}.")

    # -- injection ----------------------------------------------------------------------------------------------
    def _create_and_replace(
        self,
        peft_config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        layer, path = self._pet_spec.split_key(current_key)
        plan = self._pet_plans[(layer, path)]
        options = dict(
            lora_scaling=peft_config.lora_scaling(plan.lora_rank) if plan.lora_rank else 1.0,
            lora_dropout=float(peft_config.lora_dropout),
            parallel_scaling=float(peft_config.parallel_adapter_scaling),
            non_linearity=peft_config.adapter_non_linearity,
        )
        if isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, plan, inference_mode=peft_config.inference_mode, **options)
            new_module = target
        else:
            new_module = self.tuner_layer_cls(target, adapter_name, plan, **options)
            if adapter_name not in self.active_adapters:
                new_module.requires_grad_(False)
            self._replace_module(parent, target_name, new_module, target)
        if plan.parallel_size:
            FeedForwardInputCapture.install(parent, target_name, self._pet_spec.ffn_input_arg)

    # -- merging and unloading ------------------------------------------------------------------------------------
    def _check_merge_allowed(self) -> None:
        super()._check_merge_allowed()
        for name, config in self.peft_config.items():
            if not config.is_mergeable:
                raise ValueError(
                    f"Cannot merge adapter {name!r}: only LoRA-only configs without gates can be merged into the base "
                    "weights; serial/parallel adapters, prefixes and gates stay separate modules. Use `unload()` to "
                    "get the base model back, or keep the PEFT model."
                )

    def _unload_and_optionally_merge(self, *args: Any, **kwargs: Any) -> nn.Module:
        model = super()._unload_and_optionally_merge(*args, **kwargs)
        FeedForwardInputCapture.remove_all(model)
        config = getattr(model, "config", None)
        if config is not None:
            config._attn_implementation = base_implementation_name(config._attn_implementation)
        return model

    # -- state dict -----------------------------------------------------------------------------------------------
    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """`...mixed_pet_lora.<adapter>.A.weight` -> `...mixed_pet_lora.A.weight` (blocks are nested modules)."""
        containers = "|".join(cls.tuner_layer_cls.adapter_layer_names)
        return re.sub(rf"\.({containers})\.{re.escape(adapter_name)}(?=\.|$)", r".\1", key)

    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: PeftConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Load adapters saved before the per-method prefixes: `...pet_lora.A.weight` -> `...mixed_pet_lora...`."""
        check_state_dict_masks(state_dict, where=f"adapter {adapter_name!r}")
        renamed = {_LEGACY_CONTAINER.sub(rf".{cls.prefix}\1", key): value for key, value in state_dict.items()}
        return super()._remap_adapter_state_dict_for_load(model, config, adapter_name, renamed)

    # -- prefix reparameterisation ----------------------------------------------------------------------------------
    def fold_prefix_projection(self, adapter_name: Optional[str] = None) -> int:
        """Replace every prefix MLP (of `adapter_name`, or of all adapters) by the flat keys/values it gives now.

        Outputs stay the same; the prefix then trains flat. Saving folds on its own (the state dict always holds flat
        keys/values), so call this only to drop the MLP from memory, e.g. after training. Returns the number folded.
        """
        if adapter_name is not None and adapter_name not in self.peft_config:
            raise ValueError(f"Unknown adapter {adapter_name!r}; adapters: {sorted(self.peft_config)}.")
        return sum(
            module.fold_projection()
            for name, module in self.model.named_modules()
            if isinstance(module, PrefixKV) and adapter_name in (None, name.rsplit(".", 1)[-1])
        )

    # -- inspection -----------------------------------------------------------------------------------------------
    def pet_layers(self) -> dict[str, PetLayer]:
        return {name: m for name, m in self.model.named_modules() if isinstance(m, PetLayer)}
