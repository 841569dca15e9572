"""Pruning a large PET architecture (issue 16): unit masks, first-order importance, budgeted selection, the
`prune` strategy end to end."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_configs, tiny_model
from peft import get_peft_model
from test_search_fakes import write_recipe

from peft_autoconfig import MixedPetConfig, count_trainable_parameters
from peft_autoconfig.front import load_point_config
from peft_autoconfig.search import load_recipe, read_journal, run_search
from peft_autoconfig.search.prune import (
    check_budgets,
    config_from_masks,
    maximal_config,
    pruning_targets,
    select_units,
)
from peft_autoconfig.search.space import SearchSpace, SpaceSpec
from peft_autoconfig.tuners.naming import parameter_block_type
from peft_autoconfig.tuners.units import UnitImportance, UnitMasks

BERT = tiny_configs()["bert"]  # 3 layers, hidden 32, intermediate 48


def super_config(**overrides) -> MixedPetConfig:
    kwargs = dict(lora_rank=4, serial_adapter_size=3, parallel_adapter_size=5, prefix_length=3, bias_tuning=1,
                  target_modules=["query", "value"], task_type="SEQ_CLS")
    kwargs.update(overrides)
    return MixedPetConfig(**kwargs)


def randomized(config: MixedPetConfig, seed: int = 1):
    model = get_peft_model(tiny_model("bert"), config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter_block_type(name) is not None:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def inputs() -> torch.Tensor:
    return torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(0))


def backward(model) -> None:
    model.zero_grad()
    model(inputs(), labels=torch.tensor([0, 1])).loss.backward()


def layer(model, index: int):
    return model.base_model.model.bert.encoder.layer[index]


# -- masks ------------------------------------------------------------------------------------------------------------
def test_groups_cover_every_block_and_costs_match_the_plan():
    config = super_config()
    masks = UnitMasks(randomized(config))
    assert set(masks.groups) == {(l, k) for l in range(3) for k in ("lora", "serial", "parallel", "prefix", "bias")}
    assert masks.max_cost() == masks.cost() == count_trainable_parameters(config, BERT)
    lora = masks.groups[(0, "lora")]
    assert lora.size == 4 and len(lora.blocks) == 2 and lora.unit_cost == 2 * (32 + 32)
    serial = masks.groups[(1, "serial")]
    assert (serial.unit_cost, serial.fixed_cost) == (2 * 32 + 1, 32)
    assert masks.groups[(2, "prefix")].unit_cost == 2 * 32
    assert masks.groups[(2, "bias")].unit_cost == 4 * 32 + 48 + 32 + 2 * 32


def test_masking_a_lora_rank_equals_zeroing_it_and_stops_its_gradient():
    model = randomized(super_config())
    masks = UnitMasks(model)
    masks.set_alive((0, "lora"), torch.tensor([True, False, True, True]))
    with torch.no_grad():
        masked = model(inputs()).logits
    backward(model)
    query = layer(model, 0).attention.self.query.mixed_pet_lora["default"]
    assert torch.count_nonzero(query.A.weight.grad[1]) == 0 and torch.count_nonzero(query.B.weight.grad[:, 1]) == 0
    assert torch.count_nonzero(query.A.weight.grad[0]) > 0
    masks.remove()
    with torch.no_grad():
        for target in (layer(model, 0).attention.self.query, layer(model, 0).attention.self.value):
            target.mixed_pet_lora["default"].A.weight[1] = 0
        assert torch.allclose(model(inputs()).logits, masked, atol=1e-6)


def test_masked_prefix_tokens_equal_a_shorter_prefix():
    model = randomized(super_config())
    masks = UnitMasks(model)
    keep = torch.tensor([True, False, True])
    masks.set_alive((1, "prefix"), keep)
    with torch.no_grad():
        masked = model(inputs()).logits
    shorter = get_peft_model(tiny_model("bert"), super_config(prefix_length={0: 3, 1: 2, 2: 3})).eval()
    state = {k.replace(".default", ""): v for k, v in model.state_dict().items()}
    with torch.no_grad():
        for name, parameter in shorter.named_parameters():
            source = state[name.replace(".default", "")]
            if "layer.1.attention.self.key.mixed_pet_prefix" in name:
                source = source[:, keep]
            parameter.copy_(source)
        assert torch.allclose(shorter(inputs()).logits, masked, atol=1e-5)


def test_whole_blocks_masked_and_remove_restores_the_model_exactly():
    model = randomized(super_config())
    with torch.no_grad():
        before = model(inputs()).logits
    masks = UnitMasks(model)
    for key, group in masks.groups.items():
        if key[0] == 2 or key[1] in ("serial", "bias"):
            masks.set_alive(key, torch.zeros(group.size, dtype=torch.bool))
    reference = get_peft_model(tiny_model("bert"), super_config(
        lora_rank={0: 4, 1: 4}, parallel_adapter_size={0: 5, 1: 5}, prefix_length={0: 3, 1: 3}, serial_adapter_size=0,
        bias_tuning=0,
    )).eval()
    state = {k.replace(".default", ""): v for k, v in model.state_dict().items()}
    with torch.no_grad():
        masked = model(inputs()).logits
        for name, parameter in reference.named_parameters():  # base weights: the same seed
            if parameter_block_type(name) is not None or "classifier" in name:
                parameter.copy_(state[name.replace(".default", "")])
        assert torch.allclose(reference(inputs()).logits, masked, atol=1e-5)
    config = config_from_masks(masks, {"task_type": "SEQ_CLS", "target_modules": ["query", "value"]}, BERT)
    assert config.serial_adapter_size == 0 and config.bias_tuning == 0 and config.lora_rank == {0: 4, 1: 4}
    masks.remove()
    with torch.no_grad():
        assert torch.equal(model(inputs()).logits, before)


def test_gated_blocks_are_refused():
    from peft_autoconfig import UniPELTConfig

    model = get_peft_model(tiny_model("bert"), UniPELTConfig(prefix_projection_size=0, task_type="SEQ_CLS"))
    with pytest.raises(ValueError, match="Cannot mask gated blocks"):
        UnitMasks(model)


def test_bad_mask_shape_is_a_clear_error():
    masks = UnitMasks(randomized(super_config()))
    with pytest.raises(ValueError, match=r"Mask of group \(0, 'lora'\) must have shape \(4,\), got \(3,\)"):
        masks.set_alive((0, "lora"), torch.ones(3, dtype=torch.bool))


# -- importance ---------------------------------------------------------------------------------------------------------
def test_importance_is_the_sum_of_abs_theta_times_grad_per_unit():
    model = randomized(super_config())
    importance = UnitImportance(UnitMasks(model))
    backward(model)
    importance.accumulate()
    importance.accumulate()  # accumulates: twice the same gradients = twice the score
    block = layer(model, 1)
    q, v = (block.attention.self.query.mixed_pet_lora["default"], block.attention.self.value.mixed_pet_lora["default"])
    expected = sum((m.A.weight * m.A.weight.grad).abs().sum(1) + (m.B.weight * m.B.weight.grad).abs().sum(0) for m in (q, v))
    assert torch.allclose(importance.scores[(1, "lora")], 2 * expected.double())
    serial = block.output.dense.mixed_pet_serial["default"]
    expected = ((serial.down.weight * serial.down.weight.grad).abs().sum(1) + (serial.down.bias * serial.down.bias.grad).abs()
                + (serial.up.weight * serial.up.weight.grad).abs().sum(0))
    assert torch.allclose(importance.scores[(1, "serial")], 2 * expected.double())
    assert importance.fixed[(1, "serial")] == pytest.approx(2 * float((serial.up.bias * serial.up.bias.grad).abs().sum().detach()))
    prefix = block.attention.self.key.mixed_pet_prefix["default"]
    expected = (prefix.key * prefix.key.grad).abs().sum((0, 2)) + (prefix.value * prefix.value.grad).abs().sum((0, 2))
    assert torch.allclose(importance.scores[(1, "prefix")], 2 * expected.double())
    biases = [m for n, m in block.named_modules() if n.endswith("mixed_pet_bias.default")]
    assert len(biases) == 8
    expected = sum((m.delta * m.delta.grad).abs().sum() for m in biases)
    assert torch.allclose(importance.scores[(1, "bias")], 2 * expected.double().reshape(1))
    importance.reset()
    assert importance.steps == 0 and all(float(s.sum()) == 0 for s in importance.scores.values())


# -- selection -----------------------------------------------------------------------------------------------------------
def random_scores(masks: UnitMasks, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    scores = {k: torch.rand(g.size, generator=generator, dtype=torch.float64) for k, g in masks.groups.items()}
    return scores, {k: float(torch.rand(1, generator=generator)) for k in masks.groups}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruning_never_exceeds_a_budget_and_is_nested_across_budgets(seed):
    masks = UnitMasks(randomized(super_config()))
    scores, fixed = random_scores(masks, seed)
    maximum = masks.cost()
    previous = {k: g.alive.clone() for k, g in masks.groups.items()}
    for budget in (maximum - 1, maximum // 2, maximum // 5, 200, 70):
        for target in pruning_targets(masks.cost(), budget, 0.5):
            for key, alive in select_units(masks.groups, scores, fixed, target).items():
                masks.set_alive(key, alive)
            assert masks.cost() <= target
            largest_step = max(g.unit_cost + g.fixed_cost for g in masks.groups.values())
            assert target < 200 or masks.cost() > target - largest_step, "undershot the target by more than a unit"
        assert 0 < masks.cost() <= budget
        for key, group in masks.groups.items():
            assert not (group.alive & ~previous[key]).any(), "a pruned unit came back"
            previous[key] = group.alive.clone()
        config = config_from_masks(masks, {"task_type": "SEQ_CLS", "target_modules": ["query", "value"]}, BERT)
        assert count_trainable_parameters(config, BERT) == masks.cost()


def test_selection_removes_the_least_important_units_per_parameter():
    masks = UnitMasks(randomized(super_config()))
    scores = {k: torch.ones(g.size, dtype=torch.float64) * 1e3 for k, g in masks.groups.items()}
    fixed = dict.fromkeys(masks.groups, 1e3)
    scores[(2, "parallel")] = torch.tensor([1e3, 0.0, 1e3, 0.0, 1e3], dtype=torch.float64)  # two useless units
    unit = masks.groups[(2, "parallel")].unit_cost
    chosen = select_units(masks.groups, scores, fixed, masks.cost() - 2 * unit)
    assert chosen[(2, "parallel")].tolist() == [True, False, True, False, True]
    assert all(bool(alive.all()) for key, alive in chosen.items() if key != (2, "parallel"))


def test_a_budget_below_every_structure_is_a_clear_error():
    masks = UnitMasks(randomized(super_config(bias_tuning=0)))
    scores, fixed = random_scores(masks)
    with pytest.raises(ValueError, match=r"budget 10 is below the smallest structure left to keep \(64 parameters"):
        select_units(masks.groups, scores, fixed, 10)
    with pytest.raises(ValueError, match=r"budgets \[10000000\] are above the maximal configuration"):
        check_budgets([100, 10_000_000], masks.max_cost())


def test_pruned_configs_load_with_plain_get_peft_model():
    masks = UnitMasks(randomized(super_config()))
    scores, fixed = random_scores(masks)
    for key, alive in select_units(masks.groups, scores, fixed, masks.cost() // 3).items():
        masks.set_alive(key, alive)
    config = config_from_masks(masks, {"task_type": "SEQ_CLS", "target_modules": ["query", "value"]}, BERT)
    model = get_peft_model(tiny_model("bert"), config)
    trainable = sum(p.numel() for n, p in model.named_parameters() if parameter_block_type(n) is not None)
    assert trainable == masks.cost()


def test_maximal_config_is_the_largest_point_per_layer_with_a_flat_prefix():
    space = SearchSpace(BERT, SpaceSpec(modules=("lora", "prefix", "bias"), sizes={"lora": (0, 2, 4), "prefix": (0, 4)},
                                        fixed={"prefix_projection_size": 8}))
    config, shared = maximal_config(space)
    assert config.lora_rank == {0: 4, 1: 4, 2: 4} and config.prefix_length == {0: 4, 1: 4, 2: 4}
    assert config.bias_tuning == {0: 1, 1: 1, 2: 1} and config.prefix_projection_size == 0
    assert shared["prefix_projection_size"] == 8
    assert count_trainable_parameters(config, BERT) == space.max_cost()


# -- the strategy end to end ---------------------------------------------------------------------------------------------
def test_prune_search_end_to_end_with_two_budgets(tmp_path, tiny_bert_dir, synthetic_task_dir):
    space = {"modules": ["lora", "parallel_adapter", "prefix", "bias"], "layer_mode": "sizes",
             "sizes": {"lora": [0, 4], "parallel_adapter": [0, 8], "prefix": [0, 4]}}
    path = write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate", space=space,
        algorithm={"name": "prune", "settings": {"keep_fraction": 0.5, "retrain_steps": 2}},
        budgets=[400, 1500],
        fidelity={"levels": [{"train_subset": 64, "max_steps": 4}]},
    )
    out = tmp_path / "out"
    result = run_search(load_recipe(path), out, progress=False)
    cached = json.loads((out / "oneshot.json").read_text())
    results = cached["results"]
    assert [r["budget"] for r in results] == [400, 1500]
    configs = [load_point_config(r["config"]) for r in results]
    for r, config in zip(results, configs):
        assert r["trainable_parameters"] == count_trainable_parameters(config, _model_config(tiny_bert_dir)) <= r["budget"]
        assert 0.0 <= r["score"] <= 1.0
    small, large = ({f: config.size(f, l) for f in ("lora_rank", "parallel_adapter_size", "prefix_length", "bias_tuning")
                     for l in range(2)} for config in configs)
    assert all(small[k] <= large[k] for k in small), "the smaller budget's structure is not nested in the larger"
    assert (out / "oneshot" / "prune_survival.png").stat().st_size > 0
    assert all(0.0 <= f <= 1.0 for f in results[0]["details"]["kept_fraction"].values())
    trace = json.loads((out / "oneshot" / "prune_trace.json").read_text())
    assert trace["steps"][0]["parameters"] == results[0]["details"]["maximal_parameters"]
    assert len(result.front) == 2
    assert {t["name"] for t in read_journal(out / "journal.jsonl") if t["kind"] == "search"} == {"budget=400", "budget=1500"}


def _model_config(directory):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(directory)


def test_unstructured_prune_emits_weight_masks_counted_as_non_zero_weights(tmp_path, tiny_bert_dir, synthetic_task_dir):
    from peft_autoconfig.tuners.weight_masks import load_mask_file

    path = write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
        space={"modules": ["lora", "bias"], "sizes": {"lora": [0, 4]}, "layer_mode": "sizes"},
        algorithm={"name": "prune", "settings": {"unstructured": True, "retrain_steps": 1, "evaluate": False}},
        budgets=[100, 600], fidelity={"levels": [{"train_subset": 64, "max_steps": 2}]},
    )
    out = tmp_path / "out"
    run_search(load_recipe(path), out, progress=False)
    results = json.loads((out / "oneshot.json").read_text())["results"]
    model_config = _model_config(tiny_bert_dir)
    masks = []
    for r in results:
        config = load_point_config(r["config"])
        assert config.weight_masks and r["details"]["mask_file"] == config.weight_masks
        masks.append(load_mask_file(config.weight_masks))
        kept = sum(int(m.sum()) for m in masks[-1].values())
        assert kept == r["trainable_parameters"] == count_trainable_parameters(config, model_config) <= r["budget"]
        assert r["score"] is None
    small, large = masks
    assert all(not (small[k] & ~large[k]).any() for k in small), "unstructured masks are not nested"
    # the exported front points carry their masks (front/pNN/weight_masks.safetensors, named relatively)
    for point in json.loads((out / "front.json").read_text())["points"]:
        folder = out / point["config_path"]
        assert point["config"]["weight_masks"] == "weight_masks.safetensors" and (folder / "weight_masks.safetensors").is_file()
        carried = load_mask_file(load_point_config(folder).weight_masks)
        expected = dict(zip([r["trainable_parameters"] for r in results], masks))[point["trainable_parameters"]]
        assert carried.keys() == expected.keys() and all(torch.equal(carried[k], expected[k]) for k in expected)
    # the re-trained trials of the driver applied the same masks (a plain get_peft_model of the config)
    from transformers import AutoModelForSequenceClassification

    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), load_point_config(results[0]["config"]))
    nonzero = sum(int(torch.count_nonzero(p)) for n, p in model.named_parameters() if parameter_block_type(n) is not None)
    assert nonzero <= results[0]["trainable_parameters"]


def test_a_restarted_unstructured_stage_never_overwrites_earlier_mask_files(tmp_path):
    from peft_autoconfig.search.prune.unstructured import fresh_directory
    from peft_autoconfig.tuners.weight_masks import save_mask_file

    first = fresh_directory(tmp_path / "masks")
    saved = save_mask_file(first / "budget-100.safetensors", {"x.mixed_pet_bias.delta": torch.ones(3, dtype=torch.bool)})
    before = saved.read_bytes()
    second = fresh_directory(tmp_path / "masks")
    assert (first.name, second.name) == ("run-0", "run-1") and saved.read_bytes() == before
