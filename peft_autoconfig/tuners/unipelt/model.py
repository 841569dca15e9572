"""`UniPELTModel`: the mixed tuner with gates; adds gate inspection, pinning and a conversion to `MixedPetConfig`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from torch import nn

from ...peft_types import UNIPELT, state_dict_prefix
from ..layer import PetLayer
from ..mixed.model import MixedPetModel
from .context import GateContextCapture
from .gates import GateRecorder, GateValue, format_gate_table, last_gate_values, to_mixed_config
from .pins import apply_gate_pins, set_gates

if TYPE_CHECKING:
    from ..mixed.config import MixedPetConfig


class UniPELTLayer(PetLayer):
    """UniPELT's tuner layer: block containers `unipelt_lora`, `unipelt_serial`, ..."""

    prefix = state_dict_prefix(UNIPELT)


class UniPELTModel(MixedPetModel):
    """Tuner of gated UniPELT; injection is the mixed tuner's, the gates live inside the blocks.

    From a `PeftModel`, reach these methods as `peft_model.base_model.gate_values()` etc.
    """

    prefix: str = UniPELTLayer.prefix
    tuner_layer_cls: type[PetLayer] = UniPELTLayer

    def inject_adapter(self, model: nn.Module, adapter_name: str, **kwargs: Any) -> None:
        """Inject as the mixed tuner does, then hand the attention mask to the gates and apply saved pins."""
        super().inject_adapter(model, adapter_name, **kwargs)
        GateContextCapture.install(model)
        apply_gate_pins(self, adapter_name)

    def _unload_and_optionally_merge(self, *args: Any, **kwargs: Any) -> nn.Module:
        model = super()._unload_and_optionally_merge(*args, **kwargs)
        GateContextCapture.remove_all(model)
        return model

    def _adapter(self, adapter_name: Optional[str]) -> str:
        if adapter_name is None:
            return self.active_adapters[0]
        if adapter_name not in self.peft_config:
            raise ValueError(f"Unknown adapter {adapter_name!r}; adapters: {sorted(self.peft_config)}.")
        return adapter_name

    def gate_values(self, adapter_name: Optional[str] = None) -> list[GateValue]:
        """Gates of the last forward pass, one row per (layer, block), averaged over that batch.

        Blocks are `lora/<path>` (e.g. `lora/attention.self.query`), `serial`, `parallel` and `prefix`. For values
        averaged over many batches use `record_gates()`.
        """
        return last_gate_values(self, self._adapter(adapter_name))

    def format_gate_values(self, adapter_name: Optional[str] = None, digits: int = 3) -> str:
        """`gate_values()` as a text table, one line per layer."""
        return format_gate_table(self.gate_values(adapter_name), digits=digits)

    def print_gate_values(self, adapter_name: Optional[str] = None, digits: int = 3) -> None:
        print(self.format_gate_values(adapter_name, digits))

    def record_gates(self, adapter_name: Optional[str] = None) -> GateRecorder:
        """A `GateRecorder` (context manager) that averages the gates over every forward pass until closed."""
        return GateRecorder(self, self._adapter(adapter_name))

    def set_gate(
        self,
        block: str,
        value: Optional[float],
        layers: Optional[Iterable[int]] = None,
        adapter_name: Optional[str] = None,
    ) -> int:
        """Pin gates of `block` to `value` in [0, 1] (None: learned again); returns the number of gates changed.

        `block` is a kind (`lora`, `serial`, `parallel`, `prefix`), one LoRA target (`lora/<path>`) or `all`;
        `layers` limits it to some layer indices. A gate pinned to 0 removes its block's effect exactly (a prefix is
        then not even attended to). Pins are recorded in the adapter's `gate_pins`, so `save_pretrained` keeps them.
        """
        return set_gates(self, block, value, layers, self._adapter(adapter_name))

    def to_mixed_config(
        self,
        gate_table: Optional[Iterable[GateValue]] = None,
        threshold: float = 0.5,
        adapter_name: Optional[str] = None,
        **overrides: Any,
    ) -> MixedPetConfig:
        """A `MixedPetConfig` keeping only the blocks whose gate mean is >= `threshold` (see `gates.to_mixed_config`).

        Without `gate_table`, the gates of the last forward pass are used; pass `recorder.table()` to use means over
        a whole evaluation set instead (recommended).
        """
        name = self._adapter(adapter_name)
        rows = self.gate_values(name) if gate_table is None else list(gate_table)
        return to_mixed_config(self.peft_config[name], rows, threshold=threshold, adapter_name=name, **overrides)
