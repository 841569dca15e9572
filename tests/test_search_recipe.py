"""Recipe validation: every mistake is reported, naming the field, before any training starts."""

from __future__ import annotations

import pytest
import yaml
from test_search_fakes import write_recipe

from peft_autoconfig.cli import main
from peft_autoconfig.search.recipe import RecipeError, load_recipe, parse_recipe

BASE = {"model": "m", "task": "rotten_tomatoes"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"epochs": 3}, r"unknown recipe field `epochs`; allowed fields: \['model', 'task'"),
        ({"algorithm": {"name": "bayes"}}, r"`algorithm.name`: unknown algorithm 'bayes'; allowed: \['nsga2', 'random'\]"),
        ({"algorithm": {"n_trials": 0}}, r"`algorithm.n_trials`: Input should be greater than or equal to 1, got 0"),
        ({"algorithm": {"pop": 4}}, r"unknown recipe field `algorithm.pop`"),
        ({"fidelity": {"levels": [{"steps": 3}]}}, r"unknown recipe field `fidelity.levels\[0\].steps`.*'max_steps'"),
        ({"fidelity": {"levels": [{"max_steps": 0}]}}, r"`fidelity.levels\[0\].max_steps`: must be -1"),
        ({"fidelity": {"eta": 1}}, r"`fidelity.eta`: Input should be greater than or equal to 2, got 1"),
        ({"objectives": ["metric", "latency"]}, r"`objectives\[1\]`: Input should be 'metric', 'trainable_parameters'.*got 'latency'"),
        ({"space": {"modules": ["serial_adapter", "ia3"]}}, r"`space.modules\[1\]`: Input should be 'serial_adapter'.*'lora', got 'ia3'"),
        ({"space": {"sizes": {"prefix": [0, -2]}}}, r"`space.sizes.prefix\[1\]`: Input should be greater than or equal to 0, got -2"),
        ({"space": {"layer_mode": "heads"}}, r"`space.layer_mode`: Input should be 'flags' or 'sizes', got 'heads'"),
        ({"training": {"learning_rate": -1}}, r"`training.learning_rate`: Input should be greater than 0, got -1"),
        ({"reference_point": [0]}, r"`reference_point` must list one number per objective \(2\)"),
        ({"baselines": [{"name": "a", "config": {}}, {"name": "a", "config": {}}]}, r"`baselines\[1\].name` must be a unique"),
    ],
)
def test_recipe_errors_name_the_field(patch, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({**BASE, **patch})


def test_defaults_and_scientific_notation(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: m\ntask: rotten_tomatoes\ntraining: {learning_rate: 1e-3}\n")  # YAML reads 1e-3 as a string
    recipe = load_recipe(path)
    assert recipe.training.learning_rate == 0.001
    assert (recipe.algorithm.name, recipe.objectives, recipe.fidelity_levels) == ("nsga2", ["metric", "trainable_parameters"], [{}])


def test_cli_reports_bad_recipe_before_training(tmp_path, tiny_bert_dir, synthetic_task_dir, capsys, monkeypatch):
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(calls))
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:logged_slow_evaluate",
                        baselines=[{"name": "bad", "config": {"lora_rank": -1}}])
    out = tmp_path / "out"
    assert main(["search", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "`baselines[0].config`" in capsys.readouterr().err
    assert not calls.exists() and not (out / "journal.jsonl").exists()
    data = yaml.safe_load(path.read_text())
    data.pop("baselines")
    data["space"] = {"modules": ["lora"], "lora_targets": [["qkv"]]}
    path.write_text(yaml.safe_dump(data))
    assert main(["search", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "'qkv' is not a projection" in capsys.readouterr().err
    assert not calls.exists()


@pytest.mark.parametrize("name", ["demo.yaml", "glue_sst2.yaml"])
def test_shipped_recipes_are_valid(name):
    from pathlib import Path

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / name)
    assert recipe.algorithm.name == "nsga2" and len(recipe.fidelity_levels) >= 2 and recipe.baselines
    assert recipe.algorithm.n_trials >= 4 * recipe.algorithm.pop_size  # NSGA-II gets generations that matter
    assert recipe.final is not None and recipe.evaluation.report_split == "test"
