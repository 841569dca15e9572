"""The mixed composite method as a first-class peft method (issue 2)."""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from conftest import tiny_configs, tiny_model
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils.peft_types import PeftType

import peft_autoconfig
from peft_autoconfig import MixedPetConfig, UnsupportedModelError, count_trainable_parameters
from peft_autoconfig.tuners.layer import PetLayer
from peft_autoconfig.tuners.naming import parameter_block_type

FAMILIES = ["bert", "roberta", "llama", "gpt2"]
ENCODERS = {"bert", "roberta"}


def task_type(family: str) -> str:
    return "SEQ_CLS" if family in ENCODERS else "CAUSAL_LM"


def all_blocks(family: str, **overrides) -> MixedPetConfig:
    kwargs = dict(
        lora_rank=4, serial_adapter_size=3, parallel_adapter_size={1: 5}, prefix_length=2, task_type=task_type(family)
    )
    kwargs.update(overrides)
    return MixedPetConfig(**kwargs)


def inputs(family: str, batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, 100, (batch, length), generator=generator)


def randomize_pet(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every PET parameter a non-trivial value, as after training (fresh blocks are a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if parameter_block_type(name) is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def pet_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if parameter_block_type(n) is not None)


# -- registration -------------------------------------------------------------------------------------------------
def test_import_registers_the_methods_with_peft():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PeftType.MIXED_PET in PEFT_TYPE_TO_CONFIG_MAPPING
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.MIXED_PET] is MixedPetConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.UNIPELT] is peft_autoconfig.UniPELTModel
    peft_autoconfig.ensure_registered()  # idempotent
    assert MixedPetConfig(lora_rank=2).peft_type == PeftType.MIXED_PET
    # the added members behave like peft's own: lookup by value and name, iteration, pickling (Dask workers)
    import pickle

    assert PeftType("MIXED_PET") is PeftType["MIXED_PET"] is PeftType.MIXED_PET
    assert list(PeftType).count(PeftType.UNIPELT) == 1
    assert pickle.loads(pickle.dumps(PeftType.UNIPELT)) is PeftType.UNIPELT


# -- trainability -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_only_pet_parameters_train_and_one_step_changes_only_them(family):
    model = get_peft_model(tiny_model(family), all_blocks(family))
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n in trainable if parameter_block_type(n) is None}
    assert trainable and all(parameter_block_type(n) is not None or "modules_to_save" in n for n in trainable)
    if family in ENCODERS:
        assert head, "the classifier head is trained and saved for SEQ_CLS"
    else:
        assert not head
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = inputs(family)
    if family in ENCODERS:
        loss = model(input_ids=x, labels=torch.tensor([0, 1])).loss
    else:
        loss = model(input_ids=x, labels=x).loss
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable
    # every block kind received a gradient step (zero-initialised up/B projections move first)
    assert {parameter_block_type(n) for n in changed} >= {"lora", "serial_adapter", "parallel_adapter", "prefix"}


# -- initialisation -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_lora_serial_and_parallel_blocks_leave_outputs_unchanged(family):
    base = tiny_model(family)
    x = inputs(family)
    with torch.no_grad():
        expected = base(x).logits
        model = get_peft_model(base, all_blocks(family, prefix_length=0)).eval()
        assert len(model.base_model.pet_layers()) > 0
        assert torch.equal(model(x).logits, expected)


# -- prefix -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_prefix_changes_outputs_and_is_the_same_for_eager_and_sdpa(family, implementation):
    x = inputs(family)
    base = tiny_model(family, implementation)
    with torch.no_grad():
        plain = base(x, output_hidden_states=True).hidden_states[-1]
        model = get_peft_model(base, MixedPetConfig(prefix_length=3, task_type=task_type(family))).eval()
        randomize_pet(model)
        with_prefix = model(x, output_hidden_states=True).hidden_states[-1]
        assert (with_prefix - plain).abs().max() > 1e-2
        other = "sdpa" if implementation == "eager" else "eager"
        twin = get_peft_model(tiny_model(family, other), MixedPetConfig(prefix_length=3, task_type=task_type(family)))
        twin.load_state_dict(model.state_dict())
        twin_hidden = twin.eval()(x, output_hidden_states=True).hidden_states[-1]
        assert torch.allclose(twin_hidden, with_prefix, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_prefix_padding_does_not_change_logits_at_real_tokens(family, implementation):
    model = get_peft_model(tiny_model(family, implementation), all_blocks(family)).eval()
    randomize_pet(model)
    x = inputs(family, batch=2, length=6)
    padded = torch.cat([x, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 6, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        unpadded = model(input_ids=x, output_hidden_states=True)
        padded_out = model(input_ids=padded, attention_mask=mask, output_hidden_states=True)
    assert torch.allclose(padded_out.hidden_states[-1][:, :6], unpadded.hidden_states[-1], atol=1e-5)
    if family in ENCODERS:  # pooled classification logits
        assert torch.allclose(padded_out.logits, unpadded.logits, atol=1e-5)
    else:
        assert torch.allclose(padded_out.logits[:, :6], unpadded.logits, atol=1e-5)
    # and the padding mask really matters: ignoring it changes the real tokens' states
    with torch.no_grad():
        unmasked = model(input_ids=padded, output_hidden_states=True).hidden_states[-1][:, :6]
    if family in ENCODERS:
        assert not torch.allclose(unmasked, unpadded.hidden_states[-1], atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_generate_with_kv_cache_matches_step_by_step_forward(family, implementation):
    model = get_peft_model(tiny_model(family, implementation), all_blocks(family)).eval()
    randomize_pet(model)
    prompt = inputs(family, batch=1, length=5)
    with torch.no_grad():
        generated = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        sequence = prompt
        for _ in range(6):
            next_token = model(input_ids=sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_token], dim=1)
    assert torch.equal(generated[:, : sequence.shape[1]], sequence)


# -- save / load --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_reproduce_logits_exactly(family, tmp_path):
    x = inputs(family)
    model = get_peft_model(tiny_model(family), all_blocks(family, layers_to_transform=[0, 1])).eval()
    randomize_pet(model)
    with torch.no_grad():
        expected = model(x).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists()
    assert not (tmp_path / "adapter_model.bin").exists()
    loaded_config = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded_config, MixedPetConfig)
    assert loaded_config.parallel_adapter_size == {1: 5}
    reloaded = PeftModel.from_pretrained(tiny_model(family), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, expected)


# -- multiple adapters, disabling, merging ------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_multiple_adapters_and_disable_adapter(family):
    x = inputs(family)
    base = tiny_model(family)
    with torch.no_grad():
        base_logits = base(x).logits
    model = get_peft_model(base, all_blocks(family)).eval()
    model.add_adapter("second", MixedPetConfig(lora_rank=2, serial_adapter_size=2, task_type=task_type(family)))
    randomize_pet(model)
    with torch.no_grad():
        first = model(x).logits
        model.set_adapter("second")
        second = model(x).logits
        assert not torch.allclose(first, second)
        with model.disable_adapter():
            disabled = model(x).logits
        model.delete_adapter("default")
        assert torch.equal(model(x).logits, second)
    if family in ENCODERS:  # the classifier head is trained per adapter; compare the body instead
        disabled_body = model.base_model.model.bert(x).last_hidden_state
        with model.disable_adapter():
            assert torch.equal(model.base_model.model.bert(x).last_hidden_state, base.bert(x).last_hidden_state)
        assert disabled_body is not None
    else:
        assert torch.equal(disabled, base_logits)
    assert not any("default" in n for n, _ in model.named_parameters() if parameter_block_type(n) is not None)


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_merge_and_unload_lora_only_is_exact(family):
    x = inputs(family)
    model = get_peft_model(
        tiny_model(family), MixedPetConfig(lora_rank={0: 4, 1: 2}, target_modules=None, task_type=task_type(family))
    ).eval()
    randomize_pet(model)
    with torch.no_grad():
        expected = model(x).logits
        merged = model.merge_and_unload()
        assert not any(isinstance(m, PetLayer) for m in merged.modules())
        assert torch.allclose(merged(x).logits, expected, atol=1e-5)


def test_merge_refuses_unmergeable_blocks_and_unload_restores_the_base():
    x = inputs("llama")
    base = tiny_model("llama")
    with torch.no_grad():
        expected = base(x).logits
    model = get_peft_model(base, all_blocks("llama"))
    randomize_pet(model)
    with pytest.raises(ValueError, match="only LoRA-only configs"):
        model.merge_and_unload()
    unloaded = model.unload()
    assert unloaded.config._attn_implementation == "sdpa"
    assert not any(isinstance(m, PetLayer) for m in unloaded.modules())
    with torch.no_grad():
        assert torch.equal(unloaded(x).logits, expected)


# -- analytic cost ------------------------------------------------------------------------------------------------
def random_config(rng: random.Random, family: str, num_layers: int, placement: str = "houlsby") -> MixedPetConfig:
    def size(choices):
        if rng.random() < 0.3:
            return {i: rng.choice(choices) for i in range(num_layers) if rng.random() < 0.7}
        return rng.choice(choices)

    targets = {
        "bert": ["query", "key", "value", "dense"],
        "roberta": ["query", "value", "intermediate.dense"],
        "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
        "gpt2": ["c_attn", "c_proj", "c_fc"],
    }[family]
    kwargs = dict(
        serial_adapter_size=size([0, 1, 4, 8]),
        parallel_adapter_size=size([0, 2, 16]),
        lora_rank=size([0, 1, 4]),
        prefix_length=size([0, 1, 5]),
        target_modules=rng.sample(targets, rng.randint(1, len(targets))),
        layers_to_transform=sorted(rng.sample(range(num_layers), rng.randint(1, num_layers))) if rng.random() < 0.5 else None,
        task_type=task_type(family),
        serial_adapter_placement=placement,
    )
    sizes = [kwargs[k] for k in ("serial_adapter_size", "parallel_adapter_size", "lora_rank", "prefix_length")]
    if not any(v > 0 if isinstance(v, int) else any(n > 0 for n in v.values()) for v in sizes):
        kwargs["lora_rank"] = 2  # at least one block
    return MixedPetConfig(**kwargs)


@pytest.mark.parametrize(
    ("family", "placement"), [(f, "houlsby") for f in FAMILIES] + [(f, "pfeiffer") for f in sorted(ENCODERS)]
)
def test_analytic_parameter_count_equals_real_count(family, placement):
    rng = random.Random(zlib.crc32(family.encode()))  # str hashes change per process
    config = tiny_configs()[family]
    for _ in range(12):
        peft_config = random_config(rng, family, config.num_hidden_layers, placement)
        expected = count_trainable_parameters(peft_config, config)
        model = get_peft_model(tiny_model(family), peft_config)
        assert pet_parameter_count(model) == expected, peft_config
        trainable_pet = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and parameter_block_type(n) is not None)
        assert trainable_pet == expected


def test_analytic_count_accepts_a_config_dict_without_building_a_model():
    config = tiny_configs()["llama"].to_dict()
    peft_config = MixedPetConfig(prefix_length=4, layers_to_transform=[0])
    # GQA: 2 kv heads x head_dim 8, keys and values
    assert count_trainable_parameters(peft_config, config) == 2 * 4 * 2 * 8


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lora_rank": -1}, r"`lora_rank` must be >= 0"),
        ({"serial_adapter_size": {0: -2}}, r"`serial_adapter_size\[0\]` must be >= 0"),
        ({"prefix_length": "long"}, r"`prefix_length` must be an int"),
        ({"lora_rank": 2, "adapter_non_linearity": "sigmoid"}, r"`adapter_non_linearity` must be one of"),
        ({"lora_rank": 2, "lora_dropout": 1.5}, r"`lora_dropout` must be in \[0, 1\)"),
        ({"lora_rank": 2, "layers_to_transform": [-1]}, r"`layers_to_transform` must be"),
        ({}, r"The config adds no block"),
    ],
)
def test_bad_config_values_name_the_field(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MixedPetConfig(**kwargs)


def test_unknown_target_module_lists_the_allowed_names():
    with pytest.raises(ValueError, match=r"`target_modules` entry 'qkv'.*Allowed values: .*'query'"):
        get_peft_model(tiny_model("bert"), MixedPetConfig(lora_rank=2, target_modules=["qkv"]))


def test_layer_index_out_of_range_is_an_error():
    with pytest.raises(ValueError, match=r"Layer index 7 is out of range: the model has 3 layers"):
        get_peft_model(tiny_model("bert"), MixedPetConfig(lora_rank=2, layers_to_transform=[0, 7]))
    with pytest.raises(ValueError, match=r"Layer index 5 is out of range"):
        count_trainable_parameters(MixedPetConfig(serial_adapter_size={5: 2}), tiny_configs()["llama"])


def test_unsupported_model_is_a_clear_error():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match=r"does not support model_type 't5'.*Supported model types"):
        get_peft_model(model, MixedPetConfig(lora_rank=2))


def test_prefix_with_an_unwrappable_attention_implementation_is_refused():
    model = tiny_model("llama")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match=r"attention implementations \['eager', 'sdpa'\]"):
        get_peft_model(model, MixedPetConfig(prefix_length=2))


def test_parallel_adapter_survives_deepcopy_and_unload_removes_its_hook():
    import copy

    x = inputs("llama")
    model = get_peft_model(tiny_model("llama"), MixedPetConfig(parallel_adapter_size=2, task_type="CAUSAL_LM")).eval()
    randomize_pet(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(twin(input_ids=x).logits, model(input_ids=x).logits)
        unloaded = twin.unload()
        assert not any(len(m._forward_pre_hooks) for m in unloaded.modules())
        assert torch.equal(unloaded(input_ids=x).logits, tiny_model("llama")(input_ids=x).logits)
        model(input_ids=x)  # the original still works


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_gradient_checkpointing_gives_the_same_gradients(family):
    """The FFN-input hook and the prefix run again in the recomputed forward and must agree with the first one."""
    x = inputs(family)
    labels = torch.tensor([0, 1]) if family in ENCODERS else x
    gradients = []
    for checkpointing in (False, True):
        model = get_peft_model(tiny_model(family), all_blocks(family, parallel_adapter_size=2))
        randomize_pet(model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model(input_ids=x, labels=labels).loss.backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if parameter_block_type(n) is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 0
    for name, grad in gradients[0].items():
        assert grad is not None and torch.allclose(grad, gradients[1][name], atol=1e-6), name
