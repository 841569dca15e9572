"""Which PET block a model parameter belongs to, from its qualified name: the one source of truth for per-block
settings (learning rates, weight decay, reports).

Block parameters live in a `PetLayer` container named `<method prefix><kind>` (`mixed_pet_lora`, `unipelt_serial`,
...), then the adapter name, then the block's own modules; UniPELT's gates are a `gate` submodule of the block they
scale. peft's own LoRA (`lora_A`/`lora_B`/...) and prefix tuning (`prompt_encoder`; peft's prompt tuning and P-tuning
use the same name and count as prefix too) are covered as well, so baselines trained with plain peft share the
per-block protocol.
"""

from __future__ import annotations

import re

from ..peft_types import MIXED_PET, UNIPELT, state_dict_prefix

BLOCK_TYPES: tuple[str, ...] = ("lora", "serial_adapter", "parallel_adapter", "prefix", "prefix_mlp", "bias", "gate")
"""Block types of PET parameters, in a fixed order. "prefix_mlp" is a prefix trained through its MLP
reparameterisation (`prefix_projection_size` > 0: every parameter of the prefix then lives in its `projection`), which
needs a far smaller learning rate than a flat prefix (see `training.optim.DEFAULT_LEARNING_RATES`)."""

_TYPE_OF_KIND = {
    "lora": "lora", "serial": "serial_adapter", "parallel": "parallel_adapter", "prefix": "prefix", "bias": "bias"
}
_PREFIXES = (state_dict_prefix(MIXED_PET), state_dict_prefix(UNIPELT))
_PEFT_BLOCKS: dict[str, str] = {
    "lora_A": "lora",
    "lora_B": "lora",
    "lora_embedding_A": "lora",
    "lora_embedding_B": "lora",
    "lora_magnitude_vector": "lora",
    "prompt_encoder": "prefix",
}
"""Module names of peft's own methods that the baselines use."""
_CONTAINER = re.compile(rf"^(?:{'|'.join(map(re.escape, _PREFIXES))})({'|'.join(_TYPE_OF_KIND)})$")


def parameter_block_type(name: str) -> str | None:
    """The block type (one of `BLOCK_TYPES`) of the parameter called `name` in `model.named_parameters()` of a
    PeftModel holding either method (or in a saved adapter's state dict); None for a parameter outside the PET blocks
    (base weights, the classification head, `modules_to_save`).

    A gate's parameters give "gate" whatever block it scales.
    """
    parts = name.split(".")
    for index, part in enumerate(parts):
        match = _CONTAINER.match(part)
        if match is not None:
            inside = parts[index + 1 :]
            if "gate" in inside:
                return "gate"
            kind = _TYPE_OF_KIND[match.group(1)]
            return "prefix_mlp" if kind == "prefix" and "projection" in inside else kind
        if part in _PEFT_BLOCKS:
            return _PEFT_BLOCKS[part]
    return None
