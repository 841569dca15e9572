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
        ({"algorithm": {"name": "bayes"}}, r"`algorithm.name`: unknown algorithm 'bayes'; allowed: \['mobo', 'nsga2', 'prune', 'random', 's3pet', 'supernet'\]"),
        ({"algorithm": {"n_trials": 0}}, r"`algorithm.n_trials`: Input should be greater than or equal to 1, got 0"),
        ({"algorithm": {"pop": 4}}, r"unknown recipe field `algorithm.pop`"),
        ({"fidelity": {"levels": [{"steps": 3}]}}, r"unknown recipe field `fidelity.levels\[0\].steps`.*'max_steps'"),
        ({"fidelity": {"levels": [{"max_steps": 0}]}}, r"`fidelity.levels\[0\].max_steps`: must be -1"),
        ({"fidelity": {"eta": 1}}, r"`fidelity.eta`: Input should be greater than or equal to 2, got 1"),
        ({"objectives": ["metric", "latency"]}, r"`objectives\[1\]`: Input should be 'metric', 'trainable_parameters'.*got 'latency'"),
        ({"space": {"modules": ["serial_adapter", "ia3"]}}, r"`space.modules\[1\]`: Input should be 'serial_adapter'.*'bias', got 'ia3'"),
        ({"space": {"sizes": {"prefix": [0, -2]}}}, r"`space.sizes.prefix\[1\]`: Input should be greater than or equal to 0, got -2"),
        ({"space": {"layer_mode": "heads"}}, r"`space.layer_mode`: Input should be 'flags' or 'sizes', got 'heads'"),
        ({"training": {"learning_rate": -1}}, r"`training.learning_rate`: Input should be greater than 0, got -1"),
        ({"reference_point": [0]}, r"`reference_point` must list one number per objective \(2\)"),
        ({"baselines": [{"name": "a", "config": {}}, {"name": "a", "config": {}}]}, r"`baselines\[1\].name` must be a unique"),
        # the protocol (issue 12): every mistake named before any training
        ({"training": {"learning_rates": {"adapter": 1e-3}}},
         r"`training.learning_rates`: unknown block type 'adapter'; allowed: \['lora', 'serial_adapter', 'parallel_adapter', 'prefix', 'prefix_mlp', 'bias', 'gate', 'head', 'full'\]"),
        ({"training": {"learning_rates": {"prefix": 0}}}, r"`training.learning_rates.prefix`: Input should be greater than 0, got 0"),
        ({"training": {"learning_rates": {"lora": -1e-3}}}, r"`training.learning_rates.lora`: Input should be greater than 0"),
        ({"training": {"warmup_ratio": 0.6}}, r"`training.warmup_ratio`: Input should be less than or equal to 0.5, got 0.6"),
        ({"training": {"weight_decay": -0.1}}, r"`training.weight_decay`: Input should be greater than or equal to 0"),
        ({"evaluation": {"report_split": "validation"}}, r"`evaluation.report_split` \('validation'\) must differ from `evaluation.selection_split`"),
        ({"final": {"n_seeds": 0}}, r"`final.n_seeds`: Input should be greater than or equal to 1, got 0"),
        ({"final": {"seeds": []}}, r"`final.seeds`: List should have at least 1 item"),
        ({"final": {"seeds": [0], "n_seeds": 2}}, r"`final.seeds`: give `seeds` or `n_seeds`, not both"),
        ({"final": {"train_subset": 100}, "fidelity": {"levels": [{"train_subset": 200}]}},
         r"`final.train_subset` \(100\) is smaller than the last fidelity level's `train_subset` \(200\)"),
        ({"final": {"train_subset": 160, "num_epochs": 1}, "fidelity": {"levels": [{"train_subset": 160, "max_steps": 50}]}},
         r"`final.num_epochs`: 1.0 epochs of 160 examples are 10 steps, fewer than the last fidelity level's `max_steps` \(50\)"),
        ({"final": {"num_epochs": 1}, "fidelity": {"levels": [{"num_epochs": 2}]}}, r"`final.num_epochs` \(1.0\) is smaller"),
        ({"final": {"train_subset": 160, "num_epochs": 1}, "fidelity": {"levels": [{"max_steps": 4, "batch_size": 64}]}},
         r"`final.num_epochs`: 1.0 epochs of 160 examples are 10 steps, fewer than the last fidelity level's `max_steps` \(4 at batch size 64\)"),
        ({"fidelity": {"levels": [{"batch_size": 0}]}}, r"`fidelity.levels\[0\].batch_size`: Input should be greater than or equal to 1, got 0"),
        ({"final": {"epochs": 1}}, r"unknown recipe field `final.epochs`; allowed fields in `final`: \['train_subset', 'num_epochs', 'seeds', 'n_seeds', 'max_parameters'\]"),
        ({"baselines": ["lora_r16"]}, r"`baselines\[0\].preset`: unknown baseline 'lora_r16'; allowed: \['lora_r8', 'serial_adapter', 'parallel_adapter', 'prefix', 'unipelt', 'full_finetuning'\]"),
        ({"space": {"preset": "autopeft2"}}, r"`space.preset`: Input should be 'autopeft', got 'autopeft2'"),
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


def test_named_baselines_resolve_against_the_model(tiny_bert_dir):
    from peft_autoconfig.search.baselines import baseline_configs
    from peft_autoconfig.search.space import SearchSpace

    recipe = parse_recipe({**BASE, "baselines": ["lora_r8", "serial_adapter", "parallel_adapter", "prefix", "unipelt",
                                                 "full_finetuning", {"name": "mine", "config": {"lora_rank": 2}}]})
    configs = baseline_configs(recipe.baselines, SearchSpace.from_pretrained(str(tiny_bert_dir))).configs  # hidden 32
    assert configs["lora_r8"]["lora_rank"] == 8 and configs["serial_adapter"]["serial_adapter_size"] == 2
    assert (configs["parallel_adapter"]["parallel_adapter_size"], configs["parallel_adapter"]["parallel_adapter_scaling"]) == (16, 4.0)
    assert configs["prefix"]["prefix_length"] == 10 and configs["unipelt"]["peft_type"] == "UNIPELT"
    assert configs["full_finetuning"] is None and configs["mine"]["lora_rank"] == 2


def test_fingerprint_covers_only_the_search_part():
    base = parse_recipe({**BASE, "final": {"seeds": [0]}})
    for change in ({"final": {"seeds": [0, 1, 2]}}, {"baselines": ["lora_r8"]}, {"reference_point": [0, 1e6]},
                   {"evaluation": {"report_split": "holdout"}}):
        assert parse_recipe({**BASE, **change}).fingerprint() == base.fingerprint(), change
    for change in ({"seed": 1}, {"algorithm": {"n_trials": 13}}, {"training": {"learning_rates": {"lora": 2e-3}}},
                   {"evaluation": {"selection_split": "dev"}}, {"fidelity": {"levels": [{"max_steps": 5}]}}):
        assert parse_recipe({**BASE, **change}).fingerprint() != base.fingerprint(), change


def test_a_fidelity_level_may_train_at_its_own_batch_size(monkeypatch):
    """`fidelity.levels[i].batch_size` reaches the runner for that level only; a recipe without it keeps its
    fingerprint (resumable), one with it gets another."""
    levels = [{"train_subset": 2000, "num_epochs": 1, "batch_size": 8}, {"train_subset": 4000, "num_epochs": 1}]
    recipe = parse_recipe({**BASE, "training": {"batch_size": 16}, "fidelity": {"levels": levels},
                           "final": {"train_subset": 4000, "num_epochs": 3}})
    assert recipe.fidelity_levels == levels
    plain = {**BASE, "fidelity": {"levels": [{"train_subset": 2000}]}}
    assert parse_recipe(plain).fingerprint() == "d0d2261de3483b78"   # as before the field existed: journals resume
    assert parse_recipe(plain).fingerprint() == parse_recipe(
        {**BASE, "fidelity": {"levels": [{"train_subset": 2000, "batch_size": None}]}}).fingerprint()
    assert parse_recipe(plain).fingerprint() != parse_recipe(
        {**BASE, "fidelity": {"levels": [{"train_subset": 2000, "batch_size": 8}]}}).fingerprint()

    configs = run_configs(monkeypatch, [(recipe, level) for level in recipe.fidelity_levels])
    assert [config.batch_size for config in configs] == [8, 16]


def run_configs(monkeypatch, trials: list) -> list:
    """The `RunConfig` the default evaluator builds for each (recipe, fidelity level) trial; nothing is trained."""
    import peft_autoconfig.training.runner as runner
    from peft_autoconfig.search.evaluator import train_and_evaluate

    seen = []

    class Stop(Exception):
        pass

    def fake_run(config):
        seen.append(config)
        raise Stop

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr("peft_autoconfig.training.tasks.load_task", lambda task: task)
    for recipe, level in trials:
        with pytest.raises(Stop):
            train_and_evaluate({"task": "rotten_tomatoes", "model": "m", "config": None, "seed": 0,
                                "eval_split": "validation", "training": recipe.training.run_kwargs(),
                                "fidelity": level})
    return seen


def test_wave1_evaluation_fields_map_to_the_evaluation_block():
    recipe = parse_recipe({**BASE, "training": {"eval_subset": 400, "eval_split": "test"}})
    assert (recipe.evaluation.eval_subset, recipe.evaluation.selection_split, recipe.evaluation.report_split) == (400, "test", "validation")


@pytest.mark.parametrize("name", ["demo.yaml", "glue_sst2.yaml"])
def test_shipped_recipes_are_valid(name):
    from pathlib import Path

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / name)
    assert recipe.algorithm.name == "nsga2" and len(recipe.fidelity_levels) >= 2 and recipe.baselines
    assert recipe.algorithm.n_trials >= 4 * recipe.algorithm.pop_size  # NSGA-II gets generations that matter
    assert recipe.final is not None and recipe.evaluation.report_split == "test"
