"""`UniPELTConfig`: the mixed blocks with learned sigmoid gates (Mao et al., 2022), paper defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from peft.utils.peft_types import PeftType

from ...architectures import ModelDims
from ...peft_types import UNIPELT, add_peft_type
from ..mixed.config import LayerSizes, MixedPetConfig
from .pins import validate_gate_pins


@dataclass
class UniPELTConfig(MixedPetConfig):
    """Configuration of gated UniPELT (`PeftType.UNIPELT`): serial adapter + prefix + LoRA, each gated.

    Defaults follow the paper: serial adapter with reduction factor 16 (bottleneck `hidden_size // 16`), prefix
    length 10, LoRA rank 8 on query and value. Each gate is `sigmoid(Linear(d, 1)(x))` averaged over the sequence,
    read from the block's own input (adapter input, attention input, projection input). All
    `MixedPetConfig` fields (per-layer sizes, `layers_to_transform`, a parallel adapter, BitFit `bias_tuning`) apply;
    the BitFit block has no gate.

    Args:
        adapter_reduction_factor (`int`, *optional*):
            When set, the serial adapter size is `hidden_size // adapter_reduction_factor` in every selected layer;
            leave `serial_adapter_size` at 0 then. `None` uses `serial_adapter_size` as given.
        gate_serial_adapter (`bool`): Gate the serial adapter.
        gate_parallel_adapter (`bool`): Gate the parallel adapter (absent by default).
        gate_lora (`bool`): Gate LoRA; the gate replaces the LoRA scaling, so it cannot be merged.
        gate_prefix (`bool`): Gate the prefix keys and values.
        gate_pins (`dict[str, float]`):
            Gates pinned to a constant, keyed `"<layer>.<block>"` (`"1.serial"`, `"0.lora/attention.self.value"`),
            each a number in [0, 1]. Filled by `UniPELTModel.set_gate`, so pins are saved with the adapter and applied
            again when it is loaded; a key without a gate in the model is an error when the adapter is built.
        prefix_projection_size (`int`):
            Hidden size of the MLP that produces the prefix while training (paper: 512); folded into flat keys/values
            on save. 0 trains the prefix flat.
    """

    prefix_length: LayerSizes = field(default=10, metadata={"help": "Prefix length per layer (paper: 10)."})
    prefix_projection_size: int = field(
        default=512, metadata={"help": "Prefix MLP hidden size while training (paper: 512; folded on save); 0 = flat."}
    )
    lora_rank: LayerSizes = field(default=8, metadata={"help": "LoRA rank per layer (paper: 8)."})
    adapter_reduction_factor: Optional[int] = field(
        default=16, metadata={"help": "Serial adapter size = hidden_size // factor; None uses serial_adapter_size."}
    )
    gate_serial_adapter: bool = field(default=True, metadata={"help": "Gate the serial adapter."})
    gate_parallel_adapter: bool = field(default=True, metadata={"help": "Gate the parallel adapter."})
    gate_lora: bool = field(default=True, metadata={"help": "Gate LoRA (replaces its scaling; not mergeable)."})
    gate_prefix: bool = field(default=True, metadata={"help": "Gate the prefix keys/values."})
    gate_pins: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "Pinned gates: '<layer>.<block>' ('1.serial', '0.lora/attention.self.value') -> [0, 1]."},
    )

    def __post_init__(self) -> None:
        factor = self.adapter_reduction_factor
        if factor is not None:
            if isinstance(factor, bool) or not isinstance(factor, int) or factor <= 0:
                raise ValueError(f"`adapter_reduction_factor` must be a positive int or None, got {factor!r}.")
            if self.serial_adapter_size not in (0, {}):
                raise ValueError(
                    "Set either `adapter_reduction_factor` or `serial_adapter_size`, not both "
                    f"(got {factor} and {self.serial_adapter_size!r}); use adapter_reduction_factor=None for sizes."
                )
        for name in ("gate_serial_adapter", "gate_parallel_adapter", "gate_lora", "gate_prefix"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, got {getattr(self, name)!r}.")
        self.gate_pins = validate_gate_pins(self.gate_pins)
        super().__post_init__()

    def _peft_type(self) -> PeftType:
        return add_peft_type(UNIPELT)

    def has_any_block(self) -> bool:
        return self.adapter_reduction_factor is not None or super().has_any_block()

    def block_size(self, name: str, layer: int, dims: ModelDims) -> int:
        if name == "serial_adapter_size" and self.adapter_reduction_factor is not None:
            return max(1, dims.hidden_size // self.adapter_reduction_factor) if self.layer_selected(layer) else 0
        return super().block_size(name, layer, dims)

    def gated(self, block: str) -> bool:
        return {
            "serial": self.gate_serial_adapter,
            "parallel": self.gate_parallel_adapter,
            "lora": self.gate_lora,
            "prefix": self.gate_prefix,
            "bias": False,  # a bias delta is input-independent: UniPELT's gates would only rescale it
        }[block]

    @property
    def is_mergeable(self) -> bool:
        return self.adapter_reduction_factor is None and super().is_mergeable


__all__ = ["UniPELTConfig"]
