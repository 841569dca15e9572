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
    "heads, kept_groups, zeroed_queries, unused_groups",
    [
        (((0, 1), (2, 3)), 1, 0, 0),  # whole groups, one per layer: 2 query heads on 1 key/value head
        (((0, 1, 2, 3), (0, 1, 2, 3)), 2, 0, 0),  # everything kept
        (((0, 2), (0, 1)), 2, 2 + 2, 1),  # layer 0 reads both groups: no head is saved; layer 1 is padded
        (((0,), (0, 1)), 1, 1, 0),  # one group each; head 1 of layer 0 is zeroed inside its kept group
        (((3,), (0, 1, 2)), 2, 3 + 1, 1),  # the widest layer decides; the other is padded with an unused group
    ],
)
def test_llama_heads_are_sliced_to_the_widest_layer(heads, kept_groups, zeroed_queries, unused_groups,
                                                    make_tiny_model, tmp_path):
    model = make_tiny_model("llama")  # 4 query heads reading 2 key/value heads, head_dim 8, hidden 32
    sub = SubNetwork((0, 2), heads, ((0, 1, 2), (5, 6, 7, 8)))
    with SuperNetwork(model).use(sub):
        masked = logits(model)
    small = AutoModelForCausalLM.from_pretrained(save_exported(model, sub, tmp_path / "small")).eval()
    torch.testing.assert_close(logits(small), masked, atol=1e-5, rtol=0)
    assert small.num_parameters() == exported_parameters(model, sub)
    assert small.config.num_key_value_heads == kept_groups and small.config.num_attention_heads == 2 * kept_groups
    assert small.model.layers[0].self_attn.q_proj.weight.shape == (2 * kept_groups * 8, 32)
    padding = 3 * 32  # layer 0's one padded unit: its gate and up rows and down column
    query_head, key_value_head = 2 * 8 * 32, 2 * 8 * 32  # (q rows + o columns), (k rows + v rows)
    assert exported_parameters(model, sub) - effective_parameters(model, sub) == (
        padding + zeroed_queries * query_head + unused_groups * key_value_head)
    full = model.num_parameters()
    assert exported_parameters(model, SubNetwork.full(Dims.from_config(model.config))) == full


def test_bert_heads_are_zeroed_not_sliced(make_tiny_model, tmp_path):
    """transformers 5's BertSelfAttention ties the head size to hidden_size / num_attention_heads: fewer heads of
    the same size cannot be expressed by a plain config, so the export keeps 4 heads and zeroes the removed ones."""
    model = make_tiny_model("bert")
    dims = Dims.from_config(model.config)
    sub = SubNetwork.uniform(dims, 3, 2, 48)
    small = AutoModelForSequenceClassification.from_pretrained(save_exported(model, sub, tmp_path / "small")).eval()
    assert small.config.num_attention_heads == 4 and small.num_parameters() == model.num_parameters()
    attention = small.bert.encoder.layer[0].attention
    assert attention.self.query.weight[16:].abs().sum() == 0 and attention.output.dense.weight[:, 16:].abs().sum() == 0
    per_head = 3 * (32 * 8 + 8) + 32 * 8  # query, key, value rows with bias; output columns
    assert model.num_parameters() - effective_parameters(model, sub) == 3 * 2 * per_head


def test_llama_without_grouped_query_attention_slices_per_head(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4, intermediate_size=24)).eval()
    sub = SubNetwork((0, 1), ((1,), (0, 3)), ((0, 1), (2, 3)))
    with SuperNetwork(model).use(sub):
        masked = logits(model)
    small = AutoModelForCausalLM.from_pretrained(save_exported(model, sub, tmp_path / "small")).eval()
    torch.testing.assert_close(logits(small), masked, atol=1e-5, rtol=0)
    assert small.config.num_attention_heads == small.config.num_key_value_heads == 2  # the widest layer's 2 heads
    assert small.num_parameters() == exported_parameters(model, sub)
    one_head = 4 * 8 * 32  # q, k, v rows and o columns of a head (no biases)
    assert exported_parameters(model, sub) - effective_parameters(model, sub) == one_head  # layer 0's padding head


def test_recipe_warns_that_bert_heads_are_only_zeroed(tiny_bert_dir):
    import warnings

    from peft_autoconfig.backbone.pipeline import check_recipe
    from peft_autoconfig.backbone.recipe import PruneRecipe

    def recipe(**space):
        return PruneRecipe.parse({"model": str(tiny_bert_dir), "task": "rotten_tomatoes", "space": space,
                                  "latency": {"sequence_length": 8}})

    with pytest.warns(UserWarning, match=r"zeroed in the exported model.*`space.min_heads: 4`"):
        check_recipe(recipe())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_recipe(recipe(min_heads=4))
        check_recipe(recipe(granularity="layer"))


def test_llama_classifier_with_fewer_heads_loads_with_auto_sequence_classification(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=40, pad_token_id=0, num_labels=3)).eval()
    sub = SubNetwork((0, 2), ((2, 3), (0,)), ((0, 5, 9), tuple(range(20))))
    with SuperNetwork(model).use(sub):
        masked = logits(model)
    small = AutoModelForSequenceClassification.from_pretrained(save_exported(model, sub, tmp_path / "small")).eval()
    assert type(small) is LlamaForSequenceClassification
    assert (small.config.num_attention_heads, small.config.num_key_value_heads, small.config.intermediate_size) == (2, 1, 20)
    assert small.num_parameters() == exported_parameters(model, sub) < model.num_parameters()
    torch.testing.assert_close(logits(small), masked, atol=1e-5, rtol=0)
