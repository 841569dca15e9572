"""The BitFit block (issue 16): bias deltas per layer and module type, counted, saved, merged, searched."""

from __future__ import annotations

import pytest
import torch
from conftest import copy_leading_slices, tiny_configs, tiny_model
from peft import PeftConfig, PeftModel, get_peft_model

from peft_autoconfig import MixedPetConfig, UniPELTConfig, count_trainable_parameters
from peft_autoconfig.search.space import SearchSpace, SpaceSpec
from peft_autoconfig.tuners.layer import PetLayer
from peft_autoconfig.tuners.naming import parameter_block_type
from peft_autoconfig.training.optim import DEFAULT_LEARNING_RATES, pet_parameter_groups

ENCODERS = {"bert", "roberta"}


def task_type(family: str) -> str:
    return "SEQ_CLS" if family in ENCODERS else "CAUSAL_LM"


def inputs(batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def randomize_bias(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if parameter_block_type(name) is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def pet_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if parameter_block_type(n) is not None)


@pytest.mark.parametrize(
    "family, kwargs",
    [
        ("bert", dict(bias_tuning=1)),
        ("bert", dict(bias_tuning={0: 1, 2: 1}, bias_targets=["query", "LayerNorm"])),
        ("bert", dict(bias_tuning={1: 1}, lora_rank=2, serial_adapter_size=3, serial_adapter_placement="pfeiffer")),
        ("roberta", dict(bias_tuning=1, bias_targets=["intermediate.dense", "attention.output.dense"])),
        ("llama", dict(bias_tuning={2: 1}, bias_targets=["q_proj", "down_proj"])),
        ("gpt2", dict(bias_tuning=1)),
    ],
)
def test_analytic_count_equals_the_real_bias_parameters(family, kwargs):
    config = MixedPetConfig(task_type=task_type(family), **kwargs)
    model = get_peft_model(tiny_model(family), config)
    assert pet_count(model) == count_trainable_parameters(config, tiny_configs()[family])
    biases = {n: p for n, p in model.named_parameters() if parameter_block_type(n) == "bias"}
    assert biases and all(p.requires_grad and p.ndim == 1 for p in biases.values())


def test_default_targets_are_every_bias_of_a_bert_layer():
    config = MixedPetConfig(bias_tuning={0: 1}, task_type="SEQ_CLS")
    model = get_peft_model(tiny_model("bert"), config)
    wrapped = sorted(n.split("layer.0.", 1)[1] for n, m in model.named_modules() if isinstance(m, PetLayer))
    assert wrapped == sorted([
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm",
    ])
    # the base bias of BERT's layer 0 (h=32, i=48): 4 * 32 (q, k, v, out) + 48 + 32 + 2 * 32 (LayerNorms)
    assert count_trainable_parameters(config, tiny_configs()["bert"]) == 4 * 32 + 48 + 32 + 2 * 32


def test_only_the_bias_deltas_and_head_train_and_the_base_stays_untouched():
    model = get_peft_model(tiny_model("bert"), MixedPetConfig(bias_tuning=1, task_type="SEQ_CLS"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss = model(inputs(), labels=torch.tensor([0, 1])).loss
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed
    assert all(parameter_block_type(n) == "bias" or "classifier" in n for n in changed)
    assert any(parameter_block_type(n) == "bias" for n in changed)


def test_fresh_bias_delta_is_a_no_op_and_a_trained_one_shifts_the_output():
    x = inputs()
    base = tiny_model("bert")
    with torch.no_grad():
        hidden = base.bert(x).last_hidden_state
    model = get_peft_model(base, MixedPetConfig(bias_tuning=1, task_type="SEQ_CLS")).eval()
    with torch.no_grad():
        assert torch.equal(model.base_model.model.bert(x).last_hidden_state, hidden)
        randomize_bias(model)
        assert not torch.allclose(model.base_model.model.bert(x).last_hidden_state, hidden)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_save_and_load_round_trip_gives_equal_logits(family, tmp_path):
    from safetensors.torch import load_file

    x = inputs()
    config = MixedPetConfig(bias_tuning={0: 1, 1: 1}, lora_rank={1: 2}, task_type=task_type(family))
    model = get_peft_model(tiny_model(family), config).eval()
    randomize_bias(model)
    with torch.no_grad():
        expected = model(x).logits
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert any("mixed_pet_bias" in key for key in saved)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert loaded.bias_tuning == {0: 1, 1: 1}
    reloaded = PeftModel.from_pretrained(tiny_model(family), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, expected)


def test_merge_and_unload_of_bias_and_lora_is_exact():
    x = inputs()
    config = MixedPetConfig(bias_tuning=1, lora_rank={0: 2}, task_type="SEQ_CLS")
    assert config.is_mergeable
    model = get_peft_model(tiny_model("bert"), config).eval()
    randomize_bias(model)
    with torch.no_grad():
        expected = model(x).logits
        merged = model.merge_and_unload()
        assert not any(isinstance(m, PetLayer) for m in merged.modules())
        assert torch.allclose(merged(x).logits, expected, atol=1e-5)


def test_bias_on_a_pfeiffer_norm_equals_a_shifted_layernorm_bias():
    """A delta on the LayerNorm that also holds a Pfeiffer serial adapter acts as `LN.bias += delta`."""
    x = inputs()
    config = MixedPetConfig(
        bias_tuning=1, bias_targets=["output.LayerNorm"], serial_adapter_size=3, serial_adapter_placement="pfeiffer",
        task_type="SEQ_CLS",
    )
    model = get_peft_model(tiny_model("bert"), config).eval()
    randomize_bias(model)
    norm = model.base_model.model.bert.encoder.layer[1].output.LayerNorm
    with torch.no_grad():
        expected = model(x).logits
        for layer in model.base_model.model.bert.encoder.layer:
            wrapper = layer.output.LayerNorm
            wrapper.base_layer.bias += wrapper.mixed_pet_bias["default"].delta
            wrapper.mixed_pet_bias["default"].delta.zero_()
        assert torch.allclose(model(x).logits, expected, atol=1e-5)
    assert isinstance(norm, PetLayer)


def test_merging_a_bias_into_a_module_without_bias_is_refused():
    model = get_peft_model(
        tiny_model("llama"), MixedPetConfig(bias_tuning={0: 1}, bias_targets=["q_proj"], task_type="CAUSAL_LM")
    )
    with pytest.raises(ValueError, match="BitFit delta needs a bias"):
        model.merge_and_unload()


def test_unipelt_counts_bias_and_keeps_it_ungated():
    config = UniPELTConfig(bias_tuning={1: 1}, prefix_projection_size=0, task_type="SEQ_CLS")
    model = get_peft_model(tiny_model("bert"), config)
    assert pet_count(model) == count_trainable_parameters(config, tiny_configs()["bert"])
    bias_names = [n for n, _ in model.named_parameters() if parameter_block_type(n) == "bias"]
    assert bias_names and all("unipelt_bias" in n and "gate" not in n for n in bias_names)


def test_bias_gets_its_own_learning_rate_group():
    model = get_peft_model(tiny_model("bert"), MixedPetConfig(bias_tuning=1, lora_rank=2, task_type="SEQ_CLS"))
    groups = {g["name"]: g for g in pet_parameter_groups(model)}
    assert groups["bias"]["lr"] == DEFAULT_LEARNING_RATES["bias"] == 1e-3
    assert sum(p.numel() for p in groups["bias"]["params"]) == count_trainable_parameters(
        MixedPetConfig(bias_tuning=1, task_type="SEQ_CLS"), tiny_configs()["bert"]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bias_tuning=2), "`bias_tuning` is an on/off flag"),
        (dict(bias_tuning={0: 3}), "`bias_tuning` is an on/off flag"),
        (dict(bias_tuning=1, bias_targets=[]), "`bias_targets` must be a non-empty list"),
    ],
)
def test_bad_bias_config_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixedPetConfig(task_type="SEQ_CLS", **kwargs)


def test_unknown_bias_target_lists_the_allowed_names():
    config = MixedPetConfig(bias_tuning=1, bias_targets=["qkv"], task_type="SEQ_CLS")
    with pytest.raises(ValueError, match=r"`bias_targets` entry 'qkv'.*Allowed values: .*LayerNorm"):
        count_trainable_parameters(config, tiny_configs()["bert"])


def test_search_space_searches_bias_per_layer():
    space = SearchSpace(tiny_configs()["bert"], SpaceSpec(modules=("lora", "bias"), layer_mode="sizes"))
    assert space.size_options["bias"] == (0, 1)
    x = {**{f"lora_rank.{i}": 0 for i in range(3)}, "bias_tuning.0": 0, "bias_tuning.1": 1, "bias_tuning.2": 0}
    config = space.decode(x)
    assert config.bias_tuning == {1: 1}
    assert space.encode(config) == space.canonical(x)
    assert space.cost(x) == count_trainable_parameters(config, tiny_configs()["bert"]) > 0
    with pytest.raises(ValueError, match="space.sizes.bias"):
        SpaceSpec(modules=("bias",), sizes={"bias": (0, 2)})


def test_unipelt_to_mixed_config_keeps_the_ungated_bias_block():
    config = UniPELTConfig(bias_tuning={1: 1}, bias_targets=["query"], prefix_projection_size=0, task_type="SEQ_CLS")
    model = get_peft_model(tiny_model("bert"), config).eval()
    with torch.no_grad():
        model(inputs())
    mixed = model.base_model.to_mixed_config(threshold=0.0)
    assert mixed.bias_tuning == {1: 1} and mixed.bias_targets == ["query"]


def test_a_journal_written_before_the_bias_rate_existed_still_resumes(tmp_path):
    """Adding the "bias" block type to the rate table changes no earlier trial: such a journal resumes."""
    from peft_autoconfig.search.journal import Journal, JournalMismatchError

    rates = dict(DEFAULT_LEARNING_RATES)
    old = {k: v for k, v in rates.items() if k != "bias"}
    Journal(tmp_path / "journal.jsonl", "fp", {}, old)
    Journal(tmp_path / "journal.jsonl", "fp", {}, rates)  # resumes
    with pytest.raises(JournalMismatchError, match=r"lora: 0.003 -> 0.001"):
        Journal(tmp_path / "journal.jsonl", "fp", {}, {**rates, "lora": 1e-3})


def test_a_super_pet_slice_without_bias_in_a_layer_equals_the_standalone_config():
    """The weight-sharing super-PET (tuners/slicing.py) knows the BitFit block: a slice that turns it off in a layer
    computes what the stand-alone sub-configuration computes."""
    import copy

    from peft_autoconfig.search.superpet import super_config
    from peft_autoconfig.tuners.slicing import SuperPet

    base = tiny_model("bert")
    space = SearchSpace(base.config, SpaceSpec(modules=("lora", "bias"), sizes={"lora": (0, 2)}, layer_mode="sizes"))
    model = get_peft_model(copy.deepcopy(base), super_config(space)).eval()
    randomize_bias(model)
    superpet = SuperPet(model, space)
    sub = MixedPetConfig(lora_rank={0: 2}, bias_tuning={1: 1}, target_modules=["query", "value"], task_type="SEQ_CLS")
    standalone = get_peft_model(copy.deepcopy(base), copy.deepcopy(sub)).eval()
    with torch.no_grad():
        superpet.copy_slice_into(standalone)
        with superpet.use(sub):
            sliced = model(inputs()).logits
        assert torch.allclose(sliced, standalone(inputs()).logits, atol=1e-5)
        assert not torch.allclose(model(inputs()).logits, sliced, atol=1e-3)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_s3pet_gates_bitfit_exactly(family):
    """S3PET (search/s3pet) has one on/off position per layer for BitFit: hard gates give the discretised config's
    outputs with the same weights, and no gate gives the base model's."""
    import copy

    import numpy as np

    from peft_autoconfig.search.s3pet import GateController, SuperConfiguration, discretise, install_gates

    base = tiny_model(family, "eager" if family == "gpt2" else "sdpa")
    task = "SEQ_CLS" if family == "bert" else None
    space = SearchSpace(base.config, SpaceSpec(modules=("lora", "bias"), layer_mode="sizes", sizes={"lora": (0, 2)},
                                               fixed={"bias_targets": ["LayerNorm"] if family == "bert" else None}),
                        task_type=task)
    superconfig = SuperConfiguration(space)
    assert [p.name for p in superconfig.positions if p.module == "bias"] == [f"bias[{i}]" for i in range(space.num_layers)]
    assert superconfig.total == count_trainable_parameters(superconfig.super_config(), base.config)
    model = get_peft_model(copy.deepcopy(base), superconfig.super_config())
    randomize_bias(model)
    controller = GateController(superconfig.counts, superconfig.total // 2)
    install_gates(model, superconfig, controller)
    chosen = discretise(superconfig, np.random.default_rng(1).uniform(size=len(superconfig)), superconfig.total // 2)
    small = get_peft_model(copy.deepcopy(base), copy.deepcopy(chosen.config))
    copy_leading_slices(small, model)
    model.eval(), small.eval()
    x = inputs()
    with torch.no_grad():
        controller.set_mask(chosen.kept)
        assert torch.allclose(model(x).logits, small(x).logits, atol=1e-5)
        controller.set_mask([])
        assert torch.allclose(model(x).logits, base(x).logits, atol=1e-5)
