"""`parameter_block_type`: every PET parameter of either method maps to its block type, nothing else does."""

from __future__ import annotations

import pytest
from conftest import tiny_configs, tiny_model
from peft import get_peft_model

from peft_autoconfig import MixedPetConfig, UniPELTConfig, count_trainable_parameters
from peft_autoconfig.tuners.blocks import Gate
from peft_autoconfig.tuners.naming import BLOCK_TYPES, parameter_block_type

LAYER0 = "base_model.model.bert.encoder.layer.0"


def test_block_types_are_the_published_tuple():
    assert BLOCK_TYPES == ("lora", "serial_adapter", "parallel_adapter", "prefix", "prefix_mlp", "bias", "gate")


def test_every_block_of_the_mixed_method_on_tiny_bert():
    config = MixedPetConfig(
        lora_rank=4, serial_adapter_size=3, parallel_adapter_size=5, prefix_length=2, task_type="SEQ_CLS"
    )
    model = get_peft_model(tiny_model("bert"), config)
    names = dict(model.named_parameters())
    expected = {
        f"{LAYER0}.attention.self.query.mixed_pet_lora.default.A.weight": "lora",
        f"{LAYER0}.attention.self.value.mixed_pet_lora.default.B.weight": "lora",
        f"{LAYER0}.output.dense.mixed_pet_serial.default.down.weight": "serial_adapter",
        f"{LAYER0}.output.dense.mixed_pet_parallel.default.up.bias": "parallel_adapter",
        f"{LAYER0}.attention.self.key.mixed_pet_prefix.default.key": "prefix",
        f"{LAYER0}.attention.self.query.base_layer.weight": None,
        f"{LAYER0}.output.dense.base_layer.weight": None,
        "base_model.model.classifier.modules_to_save.default.weight": None,
        "base_model.model.bert.embeddings.word_embeddings.weight": None,
    }
    for name, block_type in expected.items():
        assert name in names, name
        assert parameter_block_type(name) == block_type, name
    typed = {n: parameter_block_type(n) for n in names}
    assert set(typed.values()) == {None, "lora", "serial_adapter", "parallel_adapter", "prefix"}
    pet = sum(p.numel() for n, p in names.items() if typed[n] is not None)
    assert pet == count_trainable_parameters(config, tiny_configs()["bert"])
    trainable = {n for n, p in names.items() if p.requires_grad}
    assert {n for n in trainable if typed[n] is None} == {n for n in trainable if "classifier" in n}


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_unipelt_gates_are_their_own_type_and_blocks_keep_theirs(family):
    task_type = "SEQ_CLS" if family == "bert" else "CAUSAL_LM"
    model = get_peft_model(tiny_model(family), UniPELTConfig(parallel_adapter_size=4, bias_tuning={0: 1}, task_type=task_type))
    names = dict(model.named_parameters())
    gate_params = {f"{m}.{p}" for m, module in model.named_modules() if isinstance(module, Gate)
                   for p, _ in module.named_parameters()}
    assert gate_params
    for name in names:
        block_type = parameter_block_type(name)
        if name in gate_params:
            assert block_type == "gate", name
        elif ".unipelt_" in name:
            assert block_type in {"lora", "serial_adapter", "parallel_adapter", "prefix", "prefix_mlp", "bias"}, name
        else:
            assert block_type is None, name
    # UniPELT trains its prefix through the MLP (prefix_projection_size 512): "prefix_mlp", not "prefix"
    assert {parameter_block_type(n) for n in names} == {None, *BLOCK_TYPES} - {"prefix"}
    # a saved adapter's key (no adapter name) classifies the same
    assert parameter_block_type("base_model.model.model.layers.0.mlp.down_proj.unipelt_serial.gate.linear.bias") == (
        "gate"
    )


def test_prefix_through_its_mlp_is_its_own_block_type():
    """The MLP-reparameterised prefix takes `learning_rates.prefix_mlp` (1e-3), a flat prefix `prefix` (1e-2): at 1e-2
    UniPELT's MLP prefix kept the model at the majority class (benchmarks/unipelt_prefix_lr.py)."""
    from peft_autoconfig.training.optim import DEFAULT_LEARNING_RATES

    flat = get_peft_model(tiny_model("bert"), MixedPetConfig(prefix_length=2, task_type="SEQ_CLS"))
    mlp = get_peft_model(tiny_model("bert"), MixedPetConfig(prefix_length=2, prefix_projection_size=8, task_type="SEQ_CLS"))
    assert {parameter_block_type(n) for n, p in flat.named_parameters() if p.requires_grad} - {None} == {"prefix"}
    assert {parameter_block_type(n) for n, p in mlp.named_parameters() if p.requires_grad} - {None} == {"prefix_mlp"}
    assert DEFAULT_LEARNING_RATES["prefix_mlp"] < DEFAULT_LEARNING_RATES["prefix"]
