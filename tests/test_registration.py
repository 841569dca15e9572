"""Each method registers itself with peft under its own state-dict prefix; wave-1 adapters (shared `pet_`) still load."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model
from peft import PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils.peft_types import PeftType
from safetensors.torch import load_file, save_file

from peft_autoconfig import MixedPetConfig, UniPELTConfig
from peft_autoconfig.peft_types import add_peft_type
from peft_autoconfig.tuners import mixed, unipelt
from peft_autoconfig.tuners.layer import PetLayer
from peft_autoconfig.tuners.naming import parameter_block_type

CONFIGS = {
    "mixed": lambda: MixedPetConfig(
        lora_rank=4, serial_adapter_size=3, parallel_adapter_size={1: 5}, prefix_length=2, task_type="SEQ_CLS"
    ),
    "unipelt": lambda: UniPELTConfig(parallel_adapter_size=4, task_type="SEQ_CLS"),
}


def test_each_method_has_its_own_prefix_and_registers_idempotently():
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.MIXED_PET] == "mixed_pet_" == mixed.MixedPetModel.prefix
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.UNIPELT] == "unipelt_" == unipelt.UniPELTModel.prefix
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.MIXED_PET] is mixed.MixedPetModel
    mixed.register()
    unipelt.register()  # a second registration changes nothing and raises nothing
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.UNIPELT] is unipelt.UniPELTModel
    assert add_peft_type("UNIPELT") is PeftType.UNIPELT
    # a class attribute too: Python >= 3.12 resolves `PeftType.NAME` (and peft's `getattr(PeftType, NAME)`) there
    assert vars(PeftType)["MIXED_PET"] is PeftType["MIXED_PET"] and vars(PeftType)["UNIPELT"] is PeftType("UNIPELT")
    with pytest.raises(ValueError, match="upper case"):
        add_peft_type("unipelt")
    with pytest.raises(TypeError, match="abstract"):
        PetLayer(torch.nn.Linear(2, 2), "default", None)


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_saved_keys_carry_only_the_methods_prefix(method, tmp_path):
    model = get_peft_model(tiny_model("bert"), CONFIGS[method]())
    model.save_pretrained(tmp_path)
    keys = [k for k in load_file(tmp_path / "adapter_model.safetensors") if "classifier" not in k]
    prefix = model.base_model.prefix
    assert keys and all(f".{prefix}" in k for k in keys)
    other = {"mixed": "unipelt_", "unipelt": "mixed_pet_"}[method]
    assert not any(other in k or ".pet_" in k for k in keys)


def _randomize(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if parameter_block_type(name) is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_a_wave1_checkpoint_with_the_shared_pet_prefix_still_loads(method, tmp_path):
    """Rename a saved adapter's keys back to wave 1's (`...pet_lora.A.weight`), then load it with plain peft."""
    x = torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    model = get_peft_model(tiny_model("bert"), CONFIGS[method]()).eval()
    _randomize(model)
    expected = model(x).logits
    model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    new_prefix = model.base_model.prefix
    weights = load_file(path)
    old = {k.replace(f".{new_prefix}", ".pet_"): v for k, v in weights.items()}
    assert old.keys() != weights.keys() and any(".pet_lora." in k for k in old)
    save_file(old, path, metadata={"format": "pt"})
    saved_config = json.loads((tmp_path / "adapter_config.json").read_text())

    reloaded = PeftModel.from_pretrained(tiny_model("bert"), tmp_path).eval()
    assert json.loads((tmp_path / "adapter_config.json").read_text()) == saved_config
    assert torch.equal(reloaded(x).logits, expected)
