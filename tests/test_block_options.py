"""Block options: LoRA scaling independent of the searched rank; the serial adapter in both placements."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_configs, tiny_model
from peft import PeftConfig, PeftModel, get_peft_model

from peft_autoconfig import MixedPetConfig, UniPELTConfig, count_trainable_parameters
from peft_autoconfig.tuners.layer import PetLayer
from peft_autoconfig.tuners.naming import parameter_block_type

ENCODERS = ["bert", "roberta"]


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(seed))


def randomize(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if parameter_block_type(name) is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def lora_scalings(model: torch.nn.Module) -> dict[int, set[float]]:
    """rank -> the scalings of the LoRA blocks of that rank."""
    found: dict[int, set[float]] = {}
    for module in model.modules():
        if isinstance(module, PetLayer):
            for block in module.blocks("lora").values():
                found.setdefault(block.rank, set()).add(block.scaling)
    return found


# -- LoRA scaling -------------------------------------------------------------------------------------------------
def test_default_lora_scaling_is_one_at_every_rank():
    config = MixedPetConfig(lora_rank={0: 2, 1: 16}, task_type="SEQ_CLS")
    assert config.lora_alpha is None
    model = get_peft_model(tiny_model("bert"), config)
    assert lora_scalings(model) == {2: {1.0}, 16: {1.0}}


def test_same_factors_give_the_same_update_at_two_ranks():
    """A rank-4 LoRA whose factors are a rank-2 LoRA's padded with zeros computes exactly the same update."""
    x = ids()
    small = get_peft_model(tiny_model("bert"), MixedPetConfig(lora_rank=2, task_type="SEQ_CLS")).eval()
    randomize(small)
    large = get_peft_model(tiny_model("bert"), MixedPetConfig(lora_rank=4, task_type="SEQ_CLS")).eval()
    with torch.no_grad():
        state = dict(large.named_parameters())
        for name, param in small.named_parameters():
            if parameter_block_type(name) == "lora":
                target = state[name]
                target.zero_()
                target[tuple(slice(0, n) for n in param.shape)] = param
            elif "classifier" in name:
                state[name].copy_(param)
        assert torch.allclose(small(x).logits, large(x).logits, atol=1e-6)


def test_explicit_alpha_and_rslora():
    assert MixedPetConfig(lora_rank=4, lora_alpha=16).lora_scaling(4) == 4.0
    assert MixedPetConfig(lora_rank=4, lora_alpha=16, use_rslora=True).lora_scaling(4) == 8.0
    model = get_peft_model(
        tiny_model("bert"), MixedPetConfig(lora_rank={0: 4, 1: 9}, lora_alpha=6, use_rslora=True, task_type="SEQ_CLS")
    )
    assert lora_scalings(model) == {4: {3.0}, 9: {2.0}}
    with pytest.raises(ValueError, match="`use_rslora`.*`lora_alpha`"):
        MixedPetConfig(lora_rank=4, use_rslora=True)
    with pytest.raises(ValueError, match="`lora_alpha` must be positive or None"):
        MixedPetConfig(lora_rank=4, lora_alpha=0)


def test_a_saved_config_with_lora_alpha_keeps_its_scaling(tmp_path):
    """Wave-1 configs were saved with lora_alpha=8.0: they keep alpha / rank."""
    config = MixedPetConfig(lora_rank=4, lora_alpha=8.0, task_type="SEQ_CLS")
    config.save_pretrained(tmp_path)
    reloaded = PeftConfig.from_pretrained(tmp_path)
    assert lora_scalings(get_peft_model(tiny_model("bert"), reloaded)) == {4: {2.0}}
    assert math.isclose(reloaded.lora_scaling(4), 2.0)


# -- serial adapter placement ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ENCODERS)
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("method", [MixedPetConfig, UniPELTConfig])
def test_a_fresh_serial_adapter_is_an_exact_no_op(family, placement, method):
    x = ids()
    base = tiny_model(family)
    kwargs = dict(serial_adapter_placement=placement, task_type="SEQ_CLS")
    if method is MixedPetConfig:
        config = MixedPetConfig(serial_adapter_size=4, **kwargs)
    else:  # the serial adapter alone, gated
        config = UniPELTConfig(lora_rank=0, prefix_length=0, **kwargs)
    with torch.no_grad():
        expected = base(x).logits
        model = get_peft_model(base, config).eval()
        holders = [n for n, m in model.named_modules() if isinstance(m, PetLayer)]
        site = "output.LayerNorm" if placement == "pfeiffer" else "output.dense"
        assert holders and all(n.endswith(site) for n in holders)
        assert torch.equal(model(x).logits, expected)


def test_pfeiffer_computes_adapterhubs_seq_bn():
    """The feed-forward output block returns LN(h + x + adapter(LN(h + x))) with h = dense(inter)."""
    model = get_peft_model(
        tiny_model("bert"), MixedPetConfig(serial_adapter_size=4, serial_adapter_placement="pfeiffer")
    ).eval()
    randomize(model)
    output = model.base_model.model.bert.encoder.layer[1].output
    norm = output.LayerNorm.get_base_layer()
    adapter = output.LayerNorm.blocks("serial")["default"]
    generator = torch.Generator().manual_seed(2)
    inter, residual = torch.randn(2, 5, 48, generator=generator), torch.randn(2, 5, 32, generator=generator)
    with torch.no_grad():
        h = output.dense(inter) + residual
        expected = norm(h + adapter(norm(h)))
        assert torch.allclose(output(inter, residual), expected, atol=1e-6)
        assert not torch.allclose(expected, norm(h), atol=1e-3)


@pytest.mark.parametrize("family", ENCODERS)
def test_both_placements_count_the_same_and_the_count_is_real(family):
    counts = {}
    for placement in ("houlsby", "pfeiffer"):
        config = UniPELTConfig(serial_adapter_placement=placement, task_type="SEQ_CLS")
        model = get_peft_model(tiny_model(family), config)
        model.base_model.fold_prefix_projection()  # UniPELT trains its prefix through an MLP; the saved size is flat
        real = sum(p.numel() for n, p in model.named_parameters() if parameter_block_type(n) is not None)
        counts[placement] = count_trainable_parameters(config, tiny_configs()[family])
        assert real == counts[placement]
    assert counts["houlsby"] == counts["pfeiffer"]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_pfeiffer_is_refused_where_there_is_no_post_layernorm(family):
    config = MixedPetConfig(serial_adapter_size=4, serial_adapter_placement="pfeiffer", task_type="CAUSAL_LM")
    with pytest.raises(ValueError, match=r"`serial_adapter_placement`='pfeiffer'.*Allowed values for this family: \['houlsby'\]"):
        get_peft_model(tiny_model(family), config)
    with pytest.raises(ValueError, match="serial_adapter_placement"):
        count_trainable_parameters(config, tiny_configs()[family])
    # without a serial adapter the placement does not matter
    get_peft_model(tiny_model(family), MixedPetConfig(lora_rank=2, serial_adapter_placement="pfeiffer"))


def test_unknown_placement_names_the_field_and_the_values():
    with pytest.raises(ValueError, match=r"`serial_adapter_placement` must be one of \['houlsby', 'pfeiffer'\], got 'after'"):
        MixedPetConfig(serial_adapter_size=2, serial_adapter_placement="after")


@pytest.mark.parametrize("method", [MixedPetConfig, UniPELTConfig])
def test_saved_adapters_without_the_field_load_as_houlsby_with_identical_outputs(method, tmp_path):
    """A wave-1 adapter (no `serial_adapter_placement` in its config) loads as "houlsby" and gives the same logits."""
    x = ids()
    kwargs = dict(serial_adapter_size=4, adapter_reduction_factor=None) if method is UniPELTConfig else {}
    config = method(**({"serial_adapter_size": 4} | kwargs), lora_alpha=8.0, task_type="SEQ_CLS")
    model = get_peft_model(tiny_model("bert"), config).eval()
    randomize(model)
    with torch.no_grad():
        expected = model(x).logits
    model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    saved = json.loads(path.read_text())
    del saved["serial_adapter_placement"], saved["use_rslora"]
    path.write_text(json.dumps(saved))
    assert PeftConfig.from_pretrained(tmp_path).serial_adapter_placement == "houlsby"
    reloaded = PeftModel.from_pretrained(tiny_model("bert"), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, expected)


def test_pfeiffer_round_trips_and_survives_to_mixed_config(tmp_path):
    x = ids()
    config = UniPELTConfig(serial_adapter_placement="pfeiffer", task_type="SEQ_CLS")
    model = get_peft_model(tiny_model("bert"), config).eval()
    randomize(model)
    with torch.no_grad():
        expected = model(x).logits
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_model("bert"), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, expected)
    assert reloaded.base_model.to_mixed_config(threshold=0.0).serial_adapter_placement == "pfeiffer"
