"""Prefix tuning that trains like the papers' (issue 12 item 2): small initial scale, an MLP reparameterisation while
training, folded into flat per-layer keys/values on save."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from conftest import tiny_configs, tiny_model
from peft import PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from peft_autoconfig import (
    MixedPetConfig,
    UniPELTConfig,
    count_trainable_parameters,
    count_training_parameters,
)
from peft_autoconfig.tuners.blocks import PrefixKV, PrefixProjection

FAMILIES = ["bert", "roberta", "llama", "gpt2"]
ENCODERS = {"bert", "roberta"}


def task_type(family: str) -> str:
    return "SEQ_CLS" if family in ENCODERS else "CAUSAL_LM"


def mlp_config(family: str, **overrides) -> MixedPetConfig:
    kwargs = dict(prefix_length=3, prefix_projection_size=16, lora_rank=2, task_type=task_type(family))
    kwargs.update(overrides)
    return MixedPetConfig(**kwargs)


def inputs(batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def prefixes(model: torch.nn.Module) -> list[PrefixKV]:
    return [m for m in model.modules() if isinstance(m, PrefixKV)]


def train_prefixes(model: torch.nn.Module, seed: int = 1) -> None:
    """Move every prefix parameter (MLP or flat) away from its init, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prefix in prefixes(model):
            for param in prefix.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)


def trained_parameter_count(model: torch.nn.Module) -> int:
    """Trainable parameters without the task head (the counts exclude heads)."""
    heads = ("classifier", "score")
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not any(h in n for h in heads))


def saved_pet_count(directory) -> int:
    """Entries of a saved adapter without the task head (saved as `modules_to_save`)."""
    saved = load_file(directory / "adapter_model.safetensors")
    return sum(v.numel() for k, v in saved.items() if not any(h in k for h in ("classifier", "score")))


def last_hidden(model: torch.nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x, output_hidden_states=True, **kwargs).hidden_states[-1]


# -- initial scale ------------------------------------------------------------------------------------------------
def relative_change_at_init(family: str, **config) -> float:
    x = inputs(batch=4, length=12)
    base = tiny_model(family)
    plain = last_hidden(base, x)
    torch.manual_seed(0)
    model = get_peft_model(base, MixedPetConfig(prefix_length=10, task_type=task_type(family), **config)).eval()
    changed = last_hidden(model, x)
    return ((changed - plain).norm(dim=-1) / plain.norm(dim=-1)).max().item()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("projection_size", [0, 32])
def test_a_fresh_prefix_changes_the_last_hidden_state_less_than_the_old_init(family, projection_size):
    old_flat_init = relative_change_at_init(family, prefix_init_std=0.5)  # the wave-1 N(0, 0.5^2) init
    default = relative_change_at_init(family, prefix_projection_size=projection_size)
    assert default < 0.65 * old_flat_init
    if family in ENCODERS:
        assert default < 0.01 and default < old_flat_init / 2.5
    # Decoders keep a large change (0.3-0.8 here): under a causal mask the first tokens see few real keys, so 10
    # prefix keys take most of their attention whatever their scale (docs/prefix.md).


@pytest.mark.parametrize("projection_size", [0, 7])
@pytest.mark.parametrize("init_std", [0.02, 0.3])
def test_the_initial_prefix_has_the_configured_std_in_both_modes(projection_size, init_std):
    torch.manual_seed(0)
    prefix = PrefixKV(20, 4, 16, 32, init_std=init_std, projection_size=projection_size)
    key, value = prefix.flat_keys_values()
    assert key.shape == value.shape == (4, 20, 16)
    assert torch.cat([key, value]).std().item() == pytest.approx(init_std, rel=0.1)


# -- training -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_one_step_trains_the_prefix_mlp_and_changes_outputs(family):
    model = get_peft_model(tiny_model(family), mlp_config(family, lora_rank=0))
    x = inputs()
    before_out = last_hidden(model, x)
    mlp = {n: p.detach().clone() for n, p in model.named_parameters() if ".projection." in n}
    assert mlp and all(p.requires_grad for n, p in model.named_parameters() if ".projection." in n)
    assert not any(n.endswith((".key", ".value")) for n, _ in model.named_parameters() if "prefix" in n)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    hidden = model(input_ids=x, output_hidden_states=True).hidden_states[-1]
    (hidden * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    optimizer.step()
    after = dict(model.named_parameters())
    for name in ("embedding", "down_weight", "down_bias", "up_weight", "up_bias"):
        moved = [n for n in mlp if n.endswith("projection." + name) and not torch.equal(after[n], mlp[n])]
        assert moved, name
    assert not torch.allclose(last_hidden(model.eval(), x), before_out, atol=1e-6)


# -- folding, save and load ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_fold_keeps_outputs_and_leaves_flat_keys_values(family):
    model = get_peft_model(tiny_model(family), mlp_config(family)).eval()
    train_prefixes(model)
    x = inputs()
    expected = last_hidden(model, x)
    assert model.base_model.fold_prefix_projection() == tiny_configs()[family].num_hidden_layers
    assert model.base_model.fold_prefix_projection() == 0
    assert torch.allclose(last_hidden(model, x), expected, atol=1e-6)
    assert all(p.projection is None and p.key.requires_grad for p in prefixes(model))
    assert trained_parameter_count(model) == count_trainable_parameters(mlp_config(family), tiny_configs()[family])


def test_fold_of_one_adapter_leaves_the_other_and_unknown_names_are_refused():
    model = get_peft_model(tiny_model("bert"), mlp_config("bert"))
    model.add_adapter("second", mlp_config("bert"))
    assert model.base_model.fold_prefix_projection("second") == 3
    by_adapter = {p.projection is None for p in prefixes(model)}
    assert by_adapter == {True, False}
    with pytest.raises(ValueError, match="Unknown adapter 'third'"):
        model.base_model.fold_prefix_projection("third")


@pytest.mark.parametrize("family", FAMILIES)
def test_save_folds_and_load_reproduces_the_trained_model(family, tmp_path):
    config = mlp_config(family)
    model = get_peft_model(tiny_model(family), config).eval()
    train_prefixes(model)
    x = inputs()
    with torch.no_grad():
        expected = model(input_ids=x).logits
    model.save_pretrained(tmp_path / "mlp")
    assert all(p.projection is not None for p in prefixes(model))  # saving does not fold the live model
    flat = get_peft_model(tiny_model(family), mlp_config(family, prefix_projection_size=0))
    flat.save_pretrained(tmp_path / "flat")
    saved, flat_saved = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("mlp", "flat"))
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in flat_saved.items()}
    assert saved_pet_count(tmp_path / "mlp") == count_trainable_parameters(config, tiny_configs()[family])
    assert PeftConfig.from_pretrained(tmp_path / "mlp").prefix_projection_size == 16

    reloaded = PeftModel.from_pretrained(tiny_model(family), tmp_path / "mlp").eval()
    assert all(p.projection is None for p in prefixes(reloaded))
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=x).logits, expected, atol=1e-6)

    trainable = PeftModel.from_pretrained(tiny_model(family), tmp_path / "mlp", is_trainable=True).eval()
    assert all(p.projection is None and p.key.requires_grad for p in prefixes(trainable))
    with torch.no_grad():
        assert torch.allclose(trainable(input_ids=x).logits, expected, atol=1e-6)


def test_deepcopy_keeps_the_mlp_and_its_outputs():
    model = get_peft_model(tiny_model("bert"), mlp_config("bert")).eval()
    train_prefixes(model)
    twin = copy.deepcopy(model)
    x = inputs()
    assert all(p.projection is not None for p in prefixes(twin))
    assert torch.equal(last_hidden(twin, x), last_hidden(model, x))
    assert model.state_dict().keys() == twin.state_dict().keys()


# -- counts -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_training_count_equals_real_count_before_folding_and_saved_count_after(family):
    rng = random.Random(len(family))
    model_config = tiny_configs()[family]
    for _ in range(4):
        config = mlp_config(
            family,
            prefix_length={i: rng.choice([0, 1, 4]) for i in range(model_config.num_hidden_layers)} | {0: 2},
            prefix_projection_size=rng.choice([0, 5, 24]),
            serial_adapter_size=rng.choice([0, 3]),
        )
        model = get_peft_model(tiny_model(family), config)
        assert trained_parameter_count(model) == count_training_parameters(config, model_config), config
        model.base_model.fold_prefix_projection()
        assert trained_parameter_count(model) == count_trainable_parameters(config, model_config), config


def test_the_training_runner_reports_the_saved_size_of_an_mlp_prefix():
    from peft_autoconfig.training.runner import count_parameters

    config = mlp_config("bert", serial_adapter_size=3)
    model = get_peft_model(tiny_model("bert"), config)
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" in n)
    saved = count_trainable_parameters(config, tiny_configs()["bert"])
    assert trained_parameter_count(model) > saved
    assert count_parameters(model) == (saved, saved + head)
    model.base_model.fold_prefix_projection()
    assert count_parameters(model) == (saved, saved + head)


def test_training_count_of_the_prefix_mlp_analytically():
    # length 4, hidden 32, MLP 16, 2 kv heads x head_dim 8 for keys and values: one layer, GQA llama
    config = MixedPetConfig(prefix_length=4, prefix_projection_size=16, layers_to_transform=[0])
    expected = 4 * 32 + (32 + 1) * 16 + (16 + 1) * (2 * 2 * 8)
    assert count_training_parameters(config, tiny_configs()["llama"]) == expected
    assert count_trainable_parameters(config, tiny_configs()["llama"]) == 2 * 4 * 2 * 8
    assert PrefixProjection.num_parameters(4, 32, 16, 32) == expected


def test_unipelt_trains_its_prefix_through_a_512_mlp_and_saves_it_flat(tmp_path):
    config = UniPELTConfig(task_type="SEQ_CLS")
    assert config.prefix_projection_size == 512
    model = get_peft_model(tiny_model("bert"), config).eval()
    assert trained_parameter_count(model) == count_training_parameters(config, tiny_configs()["bert"])
    train_prefixes(model)
    x = inputs()
    with torch.no_grad():
        expected = model(input_ids=x).logits
    model.save_pretrained(tmp_path)
    assert saved_pet_count(tmp_path) == count_trainable_parameters(config, tiny_configs()["bert"])
    reloaded = PeftModel.from_pretrained(tiny_model("bert"), tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=x).logits, expected, atol=1e-6)


# -- attention properties with the MLP ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_mlp_prefix_is_the_same_for_eager_and_sdpa(family):
    x = inputs()
    model = get_peft_model(tiny_model(family, "sdpa"), mlp_config(family)).eval()
    train_prefixes(model)
    twin = get_peft_model(tiny_model(family, "eager"), mlp_config(family)).eval()
    with torch.no_grad():  # copy parameter by parameter: `load_state_dict` would fold the twin's MLP
        for (name, mine), (twin_name, theirs) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
            assert name == twin_name
            theirs.copy_(mine)
    assert all(p.projection is not None for p in prefixes(twin))
    assert torch.allclose(last_hidden(twin, x), last_hidden(model, x), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_mlp_prefix_padding_does_not_change_real_tokens(family, implementation):
    model = get_peft_model(tiny_model(family, implementation), mlp_config(family)).eval()
    train_prefixes(model)
    x = inputs(batch=2, length=6)
    padded = torch.cat([x, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 6, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)], dim=1)
    unpadded = last_hidden(model, x)
    assert torch.allclose(last_hidden(model, padded, attention_mask=mask)[:, :6], unpadded, atol=1e-5)


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prefix_projection_size": -1}, ValueError, r"`prefix_projection_size` must be >= 0 \(0 = flat prefix"),
        ({"prefix_projection_size": 1.5}, TypeError, r"`prefix_projection_size` must be an int"),
        ({"prefix_projection_size": True}, TypeError, r"`prefix_projection_size` must be an int"),
        ({"prefix_init_std": 0.0}, ValueError, r"`prefix_init_std` must be a positive finite float, got 0.0"),
        ({"prefix_init_std": -0.1}, ValueError, r"`prefix_init_std` must be a positive finite float"),
        ({"prefix_init_std": float("nan")}, ValueError, r"`prefix_init_std` must be a positive finite float"),
        ({"prefix_init_std": "small"}, TypeError, r"`prefix_init_std` must be a positive float, got 'small'"),
    ],
)
@pytest.mark.parametrize("config_cls", [MixedPetConfig, UniPELTConfig])
def test_bad_prefix_options_name_the_field(config_cls, kwargs, error, message):
    with pytest.raises(error, match=message):
        config_cls(prefix_length=2, **kwargs)


def test_prefix_options_survive_a_config_round_trip(tmp_path):
    config = MixedPetConfig(prefix_length=2, prefix_projection_size=64, prefix_init_std=0.05)
    config.save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert (loaded.prefix_projection_size, loaded.prefix_init_std) == (64, 0.05)
