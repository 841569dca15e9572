"""`algorithm.points_to_evaluate`: hand-designed configurations evaluated first by every ask/tell strategy."""

from __future__ import annotations

import numpy as np
import pytest
from test_search_fakes import write_recipe

from peft_autoconfig.front import config_identity
from peft_autoconfig.search import load_recipe, read_journal, run_search
from peft_autoconfig.search.recipe import RecipeError, parse_recipe

SPACE = {"modules": ["serial_adapter", "lora"], "sizes": {"serial_adapter": [0, 4, 8], "lora": [0, 2, 4]}}
POINTS = [
    {"name": "lora_r4_all_layers", "config": {"lora_rank": 4, "target_modules": ["query", "value"]}},
    {"name": "adapter_8_layer_1", "config": {"serial_adapter_size": 8, "layers_to_transform": [1]}},
]


def _search(tmp_path, tiny_bert_dir, synthetic_task_dir, name, points=POINTS, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir,
        algorithm={"name": name, "n_trials": 8, "pop_size": 4, "points_to_evaluate": points, **extra},
        space=SPACE, evaluator="test_search_fakes:fake_evaluate",
    )
    return run_search(load_recipe(recipe), tmp_path / "out", progress=False)


@pytest.mark.parametrize("name", ["nsga2", "random", "mobo"])
def test_given_points_are_the_first_trials_of_every_strategy(tmp_path, tiny_bert_dir, synthetic_task_dir, name):
    if name == "mobo":
        pytest.importorskip("botorch")
    result = _search(tmp_path, tiny_bert_dir, synthetic_task_dir, name)
    search = [t for t in read_journal(tmp_path / "out" / "journal.jsonl") if t["kind"] == "search"]
    assert len(search) == 8
    expected = {config_identity({"peft_type": "MIXED_PET", "task_type": "SEQ_CLS", **p["config"]}) for p in POINTS}
    first_two = {config_identity(t["config"]) for t in search[:2]}
    assert first_two == expected
    # the rest of the first batch is the strategy's own design: new points, not the given ones again
    others = {config_identity(t["config"]) for t in search[2:]}
    assert not others & expected
    assert result.n_trials >= 8


def test_nsga2_keeps_the_given_points_when_they_dominate(tiny_bert_dir):
    """The seeds take part in selection: told the best objectives, both survive into the next population, and
    every later batch is bred from a population that holds them."""
    from transformers import AutoConfig

    from peft_autoconfig.search.problem import SearchProblem
    from peft_autoconfig.search.space import SearchSpace, SpaceSpec
    from peft_autoconfig.search.strategies import make_strategy

    space = SearchSpace(AutoConfig.from_pretrained(tiny_bert_dir), SpaceSpec(**SPACE))
    seeds = [space.repair({**space.largest_point(), "serial_adapter_size": 4, "lora_rank": 0}),
             space.repair({**space.largest_point(), "serial_adapter_size": 0, "lora_rank": 2})]
    strategy = make_strategy("nsga2", 4, space.repair)
    strategy.setup(SearchProblem(space, ["metric", "trainable_parameters"]), seed=0, initial_points=seeds)
    keys = {space.key(x) for x in seeds}

    def objectives(points):  # the seeds dominate every other point
        return np.array([[-1.0, 0.0] if space.key(x) in keys else [-0.5, 1.0] for x in points])

    for _ in range(3):
        points = strategy.ask()
        strategy.tell(points, objectives(points))
        population = {space.key(x) for x in strategy.algorithm.pop.get("X")}
        assert keys <= population


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (["full_finetuning"], r"`algorithm.points_to_evaluate\[0\]` \('full_finetuning'\): full fine-tuning is not a point"),
        (["unipelt"], r"`algorithm.points_to_evaluate\[0\]` \('unipelt'\): UNIPELT is not a point"),
        ([{"name": "big", "config": {"lora_rank": 16}}],
         r"`algorithm.points_to_evaluate\[0\]` \('big'\): the search space cannot express it: `lora_rank` = 16 is not an option of the space \[0, 2, 4\]"),
        ([{"name": "par", "config": {"parallel_adapter_size": 4}}],
         r"`algorithm.points_to_evaluate\[0\]` \('par'\): .*`parallel_adapter_size` is set but the space does not search it"),
        ([{"name": "bad", "config": {"lora_rank": -1}}], r"`algorithm.points_to_evaluate\[0\].config`"),
    ],
)
def test_points_the_space_cannot_express_fail_before_training(tmp_path, tiny_bert_dir, synthetic_task_dir, points, message):
    with pytest.raises(RecipeError, match=message):
        _search(tmp_path, tiny_bert_dir, synthetic_task_dir, "nsga2", points=points)
    assert not (tmp_path / "out" / "journal.jsonl").exists()


def test_recipe_refuses_too_many_points_and_one_shot_strategies():
    base = {"model": "m", "task": "rotten_tomatoes"}
    with pytest.raises(RecipeError, match=r"`algorithm.points_to_evaluate`: 3 entries, at most `algorithm.pop_size` \(2\)"):
        parse_recipe({**base, "algorithm": {"pop_size": 2, "points_to_evaluate": ["lora_r8"] * 3}})
    with pytest.raises(RecipeError, match=r"`algorithm.points_to_evaluate` applies to ask/tell strategies only, not the one-shot 's3pet'"):
        parse_recipe({**base, "budgets": [100], "algorithm": {"name": "s3pet", "points_to_evaluate": ["lora_r8"]}})
    with pytest.raises(RecipeError, match=r"`algorithm.points_to_evaluate\[0\].preset`: unknown baseline 'lora_r9'"):
        parse_recipe({**base, "algorithm": {"points_to_evaluate": ["lora_r9"]}})


@pytest.mark.parametrize("name", ["demo.yaml", "rotten_tomatoes.yaml"])
def test_shipped_recipes_points_are_in_their_space(name):
    """The hand designs the shipped recipes start from are points of their own spaces (MiniLM's config)."""
    from pathlib import Path

    from peft_autoconfig.search.baselines import encode_points_to_evaluate
    from peft_autoconfig.search.recipe import resolve_model
    from peft_autoconfig.search.space import SearchSpace

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / name)
    try:
        space = SearchSpace.from_pretrained(resolve_model(recipe.model), recipe.space)
    except (ImportError, OSError, ValueError) as error:  # the `demo` extra (MiniLM's package) is not installed
        pytest.skip(f"MiniLM not available: {error}")
    points = encode_points_to_evaluate(recipe.algorithm.points_to_evaluate, space)
    assert len(points) == len(recipe.algorithm.points_to_evaluate) >= 1
    serial = points[[p.name for p in recipe.algorithm.points_to_evaluate].index("serial_adapter")]
    assert serial["serial_adapter_size"] == 24 and all(serial[f"layer_{i}"] for i in range(6))
    assert space.cost(serial) == 113_040  # AdapterHub seq_bn, reduction 16, on all six layers


def test_the_benchmark_recipe_meets_the_issues_budget():
    """recipes/rotten_tomatoes.yaml: NSGA-II breeds at least 4 generations after its first, and the search (every
    level-0 trial and every promotion) costs at most 5 runs of the final budget, in optimiser steps."""
    from pathlib import Path

    from benchmarks.search_quality import steps_of

    from peft_autoconfig.search.pareto import promotion_size

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "rotten_tomatoes.yaml")
    batch, train_size = recipe.training.batch_size, 10_202   # the bundled Rotten Tomatoes train split

    n = recipe.algorithm.n_trials
    assert n // recipe.algorithm.pop_size - 1 >= 4
    cost, count = 0.0, n
    for i, level in enumerate(recipe.fidelity_levels):
        count = n if i == 0 else promotion_size(count, recipe.fidelity.eta)
        cost += count * steps_of(dict(level), batch, train_size)
    final = steps_of(recipe.final.budget(), batch, train_size)
    assert cost / final == pytest.approx(5.0)   # 20 x 125 + 5 x 250 = 3,750 steps = 5 x 750
