"""Space, masking and export: the masked super-network computes exactly what the exported smaller model computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from peft_autoconfig.architectures import UnsupportedModelError
from peft_autoconfig.backbone import (
    GRANULARITIES, BackboneSpace, Dims, SubNetwork, SuperNetwork, effective_parameters, exported_parameters,
    save_exported,
)

INPUTS = torch.randint(5, 100, (3, 9), generator=torch.Generator().manual_seed(1))
ATTENTION = torch.ones_like(INPUTS).index_fill_(1, torch.tensor([7, 8]), 0)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUTS, attention_mask=ATTENTION).logits


@pytest.mark.parametrize("family", ["bert", "roberta", "llama"])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_masked_supernetwork_equals_exported_model(family, granularity, make_tiny_model, tmp_path):
    model = make_tiny_model(family)
    full = logits(model)
    space = BackboneSpace(Dims.from_config(model.config), granularity)
    supernet = SuperNetwork(model)
    rng = np.random.default_rng(0)
    for i in range(4):
        sub = space.sample(rng)
        with supernet.use(sub):
            masked = logits(model)
        path = save_exported(model, sub, tmp_path / f"{granularity}-{i}")
        assert (path / "model.safetensors").is_file()
        auto = AutoModelForCausalLM if family == "llama" else AutoModelForSequenceClassification
        small = auto.from_pretrained(path).eval()
        torch.testing.assert_close(logits(small), masked, atol=1e-5, rtol=0)
        assert small.num_parameters() == exported_parameters(model, sub)
        assert small.config.num_hidden_layers == len(sub.layers)
    torch.testing.assert_close(logits(model), full)  # the super-network is back to the full model


def test_smaller_subnetwork_changes_logits_and_size(make_tiny_model):
    model = make_tiny_model("bert")
    dims = Dims.from_config(model.config)
    supernet = SuperNetwork(model)
    sub = SubNetwork.uniform(dims, 2, 2, 10)
    with supernet.use(sub):
        masked = logits(model)
    assert not torch.allclose(masked, logits(model))
    full = SubNetwork.full(dims)
    assert exported_parameters(model, full) == model.num_parameters()
    assert effective_parameters(model, sub) < exported_parameters(model, sub) < model.num_parameters()
    # uniform width, all heads: nothing is padded or zeroed
    assert effective_parameters(model, SubNetwork.uniform(dims, 2, 4, 10)) == exported_parameters(
        model, SubNetwork.uniform(dims, 2, 4, 10))


def test_masks_do_not_change_state_dict_or_parameters(make_tiny_model):
    model = make_tiny_model("bert")
    keys, n = list(model.state_dict()), len(list(model.parameters()))
    supernet = SuperNetwork(model)
    supernet.select(SubNetwork.uniform(Dims.from_config(model.config), 1, 1, 1))
    assert list(model.state_dict()) == keys and len(list(model.parameters())) == n
    supernet.remove()
    assert not model.bert.encoder.layer[0].output.dense._forward_pre_hooks


@pytest.mark.parametrize(
    "sub, field",
    [
        (SubNetwork((0, 5), ((0,), (0,)), ((0,), (0,))), "subnetwork.layers"),
        (SubNetwork((0,), ((0, 4),), ((0,),)), r"subnetwork.heads\[0\]"),
        (SubNetwork((0,), ((0,),), ((48,),)), r"subnetwork.units\[0\]"),
        (SubNetwork((0,), ((),), ((0,),)), r"subnetwork.heads\[0\]` is empty"),
        (SubNetwork((), (), ()), "subnetwork.layers` is empty"),
    ],
)
def test_bad_subnetwork_names_the_field(sub, field, make_tiny_model):
    model = make_tiny_model("bert")
    with pytest.raises(ValueError, match=field):
        SuperNetwork(model).select(sub)
    with pytest.raises(ValueError, match=field):
        exported_parameters(model, sub)


def test_bad_space_and_family(make_tiny_model):
    dims = Dims.from_config(make_tiny_model("bert").config)
    with pytest.raises(ValueError, match="space.min_heads"):
        BackboneSpace(dims, "medium", min_heads=0)
    with pytest.raises(ValueError, match="space.min_layers"):
        BackboneSpace(dims, "small", min_layers=4)
    with pytest.raises(ValueError, match="space.granularity.*allowed"):
        BackboneSpace(dims, "tiny")
    with pytest.raises(UnsupportedModelError, match="model_type.*gpt2.*allowed"):
        SuperNetwork(make_tiny_model("gpt2"))


def test_export_refuses_existing_folder(make_tiny_model, tmp_path):
    model = make_tiny_model("bert")
    with pytest.raises(FileExistsError, match="exists"):
        save_exported(model, SubNetwork.full(Dims.from_config(model.config)), tmp_path)


def test_repair_keeps_a_layer_and_a_head_per_layer(make_tiny_model):
    dims = Dims.from_config(make_tiny_model("bert").config)
    layer_space = BackboneSpace(dims, "layer")
    x = layer_space.repair({f"layer_{i}": False for i in range(3)})
    assert layer_space.to_subnetwork(x).layers == (0,)
    large = BackboneSpace(dims, "large", min_heads=2)
    x = {"n_layers": 2, **{f"head_{i}_{h}": h == 3 for i in range(3) for h in range(4)},
         **{f"units_{i}": 5 for i in range(3)}}
    sub = large.to_subnetwork(large.repair(x))
    assert sub.heads == ((0, 3), (0, 3)) and sub.units == (tuple(range(5)),) * 2
    assert set(large.variables) == set(x)
    assert BackboneSpace(dims, "small").smallest() == SubNetwork.uniform(dims, 1, 1, 1)


@pytest.mark.parametrize(
    "heads, sliced",
    [(((0, 1), (2, 3)), True), (((0, 1, 2, 3), (0, 1, 2, 3)), True), (((0, 2), (0, 1)), False), (((0,), (0, 1)), False)],
)
def test_llama_heads_are_sliced_when_whole_groups_are_kept(heads, sliced, make_tiny_model, tmp_path):
    model = make_tiny_model("llama")  # 4 query heads reading 2 key/value heads
    sub = SubNetwork((0, 2), heads, ((0, 1, 2), (5, 6, 7, 8)))
    with SuperNetwork(model).use(sub):
        masked = logits(model)
    small = AutoModelForCausalLM.from_pretrained(save_exported(model, sub, tmp_path / "small")).eval()
    torch.testing.assert_close(logits(small), masked, atol=1e-5, rtol=0)
    assert small.num_parameters() == exported_parameters(model, sub)
    assert small.config.num_attention_heads == (len(heads[0]) if sliced else 4)
    padding = 3 * 32  # layer 0's one padded unit: its gate and up rows and down column
    assert (exported_parameters(model, sub) - effective_parameters(model, sub) == padding) == sliced
