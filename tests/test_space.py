"""The search space: variables, decode/encode round trips, repair of invalid points, analytic cost = real count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_configs, tiny_model
from peft import get_peft_model
from pymoo.core.mixed import MixedVariableSampling
from pymoo.core.problem import Problem
from pymoo.core.variable import Binary, Choice

from peft_autoconfig import MixedPetConfig
from peft_autoconfig.search.space import InvalidPointError, SearchSpace, SpaceSpec, default_sizes


def samples(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    problem = Problem(vars=space.variables, n_obj=2)
    return list(MixedVariableSampling()(problem, n, random_state=np.random.default_rng(seed)).get("X"))


def real_pet_count(model) -> int:
    """Trainable parameters outside the classification head (what the search's parameter objective counts)."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n)


def test_default_space_is_autopeft():
    config = tiny_configs()["bert"]  # hidden 32, 3 layers
    space = SearchSpace(config)
    assert space.names == ["serial_adapter_size", "parallel_adapter_size", "prefix_length", "layer_0", "layer_1", "layer_2"]
    assert all(isinstance(space.variables[f"layer_{i}"], Binary) for i in range(3))
    assert isinstance(space.variables["prefix_length"], Choice)
    assert space.size_options["serial_adapter"] == (0, 1, 2, 4, 8, 16) == default_sizes("serial_adapter", 32)


def test_decode_encode_round_trip_flags():
    space = SearchSpace(tiny_configs()["bert"])
    for x in samples(space, 40):
        x = space.repair(x)
        config = space.decode(x)
        assert isinstance(config, MixedPetConfig) and config.task_type == "SEQ_CLS"
        assert space.encode(config) == x
        selected = [i for i in range(3) if x[f"layer_{i}"]]
        assert config.layers_to_transform == (None if len(selected) == 3 else selected)
        assert config.serial_adapter_size == x["serial_adapter_size"]


def test_per_layer_sizes_and_lora_targets_round_trip():
    spec = SpaceSpec(modules=("lora", "serial_adapter"), layer_mode="sizes", lora_targets=(("query", "value"), ("key", "query", "value")))
    space = SearchSpace(tiny_configs()["bert"], spec)
    assert "lora_rank.2" in space.variables and "lora_targets" in space.variables and "layer_0" not in space.variables
    saw_dict = False
    for x in samples(space, 40, seed=1):
        x = space.repair(x)
        config = space.decode(x)
        saw_dict |= isinstance(config.serial_adapter_size, dict)
        back = space.encode(config)
        assert space.decode(back).to_dict() == config.to_dict()
        if any(x[f"lora_rank.{i}"] for i in range(3)):
            assert back == x
            assert config.target_modules == sorted(x["lora_targets"].split(","))
    assert saw_dict


def test_invalid_points_are_repaired_not_trained():
    space = SearchSpace(tiny_configs()["bert"])
    no_layer = {"serial_adapter_size": 4, "parallel_adapter_size": 0, "prefix_length": 2, "layer_0": False, "layer_1": False, "layer_2": False}
    with pytest.raises(InvalidPointError, match="repair"):
        space.decode(no_layer)
    repaired = space.repair(no_layer)
    assert [repaired[f"layer_{i}"] for i in range(3)] == [True, True, True]
    assert space.decode(repaired).layers_to_transform is None
    all_off = {"serial_adapter_size": 0, "parallel_adapter_size": 0, "prefix_length": 0, "layer_0": True, "layer_1": False, "layer_2": False}
    repaired = space.repair(all_off)
    assert repaired["serial_adapter_size"] == 1 and repaired["layer_0"] and not repaired["layer_1"]
    assert space.repair(repaired) == repaired  # valid points pass unchanged


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_analytic_cost_equals_real_count(family):
    spec = SpaceSpec(modules=("serial_adapter", "parallel_adapter", "prefix", "lora"))
    space = SearchSpace(tiny_configs()[family], spec, task_type="SEQ_CLS" if family == "bert" else "CAUSAL_LM")
    for x in samples(space, 4, seed=2):
        x = space.repair(x)
        model = get_peft_model(tiny_model(family), space.decode(x))
        assert space.cost(x) == real_pet_count(model) > 0
    largest = get_peft_model(tiny_model(family), space.decode(space.largest_point()))
    assert space.max_cost() == real_pet_count(largest)


def test_encode_rejects_what_the_space_cannot_express():
    space = SearchSpace(tiny_configs()["bert"])
    with pytest.raises(ValueError, match="lora_rank"):
        space.encode(MixedPetConfig(lora_rank=8))
    with pytest.raises(ValueError, match="not an option"):
        space.encode(MixedPetConfig(serial_adapter_size=5))
    with pytest.raises(ValueError, match="layer_mode: sizes"):
        space.encode(MixedPetConfig(serial_adapter_size={0: 4, 1: 8}))


def test_space_spec_errors_name_the_field():
    with pytest.raises(ValueError, match=r"modules.0\n.*Input should be 'serial_adapter'.*input_value='adapter'"):
        SpaceSpec(modules=("adapter",))
    with pytest.raises(ValueError, match=r"sizes.prefix.1\n.*greater than or equal to 0"):
        SpaceSpec(sizes={"prefix": (4, -1)})
    with pytest.raises(ValueError, match="target_modules"):
        SearchSpace(tiny_configs()["bert"], SpaceSpec(modules=("lora",), lora_targets=(("qkv",),)))
    with pytest.raises(ValueError, match="no free variable"):
        SearchSpace(tiny_configs()["bert"], SpaceSpec(modules=("lora",), sizes={"lora": (4,)}, layer_mode="sizes"))


def test_autopeft_preset_is_autopefts_value_set():
    assert default_sizes("serial_adapter", 768, preset="autopeft") == (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768)
    space = SearchSpace(tiny_configs()["bert"], SpaceSpec(preset="autopeft"))
    assert space.size_options["prefix"] == (0, 1, 2, 4, 8, 16, 32)  # hidden size 32 included
