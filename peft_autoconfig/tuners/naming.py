"""Which PET block a parameter belongs to, from its name: one table for optimisers, counts and reports.

Covers our tuners (containers `pet_lora`, `pet_serial`, `pet_parallel`, `pet_prefix`; UniPELT gates are the `gate`
sub-module of a block) and peft's own LoRA (`lora_A`/`lora_B`/...) and prefix tuning (`prompt_encoder`; peft's
prompt tuning and P-tuning use the same name and count as prefix too), so baselines trained with plain peft share
the per-block protocol.
"""

from __future__ import annotations

BLOCK_TYPES: tuple[str, ...] = ("lora", "serial_adapter", "parallel_adapter", "prefix", "gate")

_CONTAINER_BLOCKS: dict[str, str] = {
    "pet_lora": "lora",
    "pet_serial": "serial_adapter",
    "pet_parallel": "parallel_adapter",
    "pet_prefix": "prefix",
    # peft's own LoRA and prefix tuning
    "lora_A": "lora",
    "lora_B": "lora",
    "lora_embedding_A": "lora",
    "lora_embedding_B": "lora",
    "lora_magnitude_vector": "lora",
    "prompt_encoder": "prefix",
}


def parameter_block_type(name: str) -> str | None:
    """The block type (one of `BLOCK_TYPES`) of parameter `name`, or None for a parameter of no PET block.

    A UniPELT gate sits inside the block it scales (`...pet_lora.<adapter>.gate.linear.weight`) and is "gate".
    """
    parts = name.split(".")
    for index, part in enumerate(parts):
        block = _CONTAINER_BLOCKS.get(part)
        if block is not None:
            return "gate" if part.startswith("pet_") and "gate" in parts[index + 1:] else block
    return None
