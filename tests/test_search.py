"""End to end: `peft-autoconfig search` with the real runner on a tiny BERT and a synthetic task, then `show`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from peft import PeftConfig, get_peft_model
from test_search_fakes import write_recipe
from transformers import AutoModelForSequenceClassification

import peft_autoconfig  # noqa: F401
from peft_autoconfig.cli import main
from peft_autoconfig.search import load_recipe, read_journal, run_search
from peft_autoconfig.search.driver import FAILED_F
from peft_autoconfig.search.pareto import non_dominated
from peft_autoconfig.search.strategies import STRATEGIES, make_strategy


def pet_count(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n)


@pytest.fixture(scope="module")
def cli_search(tmp_path_factory, tiny_bert_dir, synthetic_task_dir):
    """One real search through the CLI: 6 trials at 2 steps, promotion of 3 to 4 steps, one LoRA baseline."""
    tmp = tmp_path_factory.mktemp("search")
    recipe = write_recipe(
        tmp, tiny_bert_dir, synthetic_task_dir,
        algorithm={"name": "nsga2", "n_trials": 6, "pop_size": 3},
        space={"modules": ["serial_adapter", "parallel_adapter", "prefix", "lora"]},
        baselines=[{"name": "lora_r4", "config": {"lora_rank": 4}}],
    )
    out = tmp / "out"
    assert main(["search", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return recipe, out


def test_cli_writes_all_outputs(cli_search):
    _, out = cli_search
    assert {p.name for p in out.iterdir()} >= {"front.json", "front", "journal.jsonl", "pareto.png"}
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "front.json").read_text())
    assert doc["format_version"] == 2 and doc["task"] == "synthetic" and doc["metric"] == "accuracy"
    assert doc["objectives"] == [{"name": "accuracy", "direction": "max"}, {"name": "trainable_parameters", "direction": "min"}]
    assert doc["search"]["algorithm"] == "nsga2" and doc["search"]["n_trials"] == 6 + 3 + 1 and doc["search"]["seed"] == 0
    assert doc["reference_point"][0] == 0.0 and doc["reference_point"][1] > 0 and doc["hypervolume"] > 0
    assert [b["name"] for b in doc["baselines"]] == ["lora_r4"]
    trials = read_journal(out / "journal.jsonl")
    assert len(trials) == 10 and [t["trial_id"] for t in trials] == list(range(10))
    assert all(t["status"] == "ok" for t in trials), [t["error"] for t in trials]
    for point in doc["points"]:
        assert point["fidelity"] == {"train_subset": 128, "max_steps": 4}  # the final front is at full fidelity
        assert (out / point["config_path"] / "adapter_config.json").is_file()
        assert point["objectives"] == {"accuracy": point["metric"], "trainable_parameters": point["trainable_parameters"]}


def test_front_points_load_build_and_count(cli_search, tiny_bert_dir):
    _, out = cli_search
    doc = json.loads((out / "front.json").read_text())
    assert doc["points"]
    for point in doc["points"]:
        config = PeftConfig.from_pretrained(str(out / point["config_path"]))
        model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), config)
        assert pet_count(model) == point["trainable_parameters"]
    F = np.array([[-p["metric"], p["trainable_parameters"]] for p in doc["points"]])
    assert sorted(non_dominated(F)) == list(range(len(F)))  # mutually non-dominated
    trials = read_journal(out / "journal.jsonl")
    final = [t for t in trials if t["level"] == 1 and t["kind"] == "promotion"]
    F_final = np.array([t["F"] for t in final])
    assert sorted(p["trial_id"] for p in doc["points"]) == sorted(final[i]["trial_id"] for i in non_dominated(F_final))
    for t in trials:  # the runner's own count agrees with the analytic objective
        assert t["measured_trainable_parameters"] == t["trainable_parameters"]


def test_rerun_resumes_without_training(cli_search, capsys):
    recipe, out = cli_search
    before = (out / "journal.jsonl").read_text()
    assert main(["search", str(recipe), "--out", str(out), "--no-progress"]) == 0
    assert "(0 evaluated now, 10 resumed)" in capsys.readouterr().out
    assert (out / "journal.jsonl").read_text() == before


def test_show_prints_the_front(cli_search, capsys):
    _, out = cli_search
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    doc = json.loads((out / "front.json").read_text())
    assert "hypervolume" in text and "reference point" in text and "lora_r4" in text
    for point in doc["points"]:
        assert point["name"] in text and f"{point['trainable_parameters']:,}" in text
    assert main(["show", str(out / "missing")]) == 2


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path, tiny_bert_dir, synthetic_task_dir):
    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:failing_evaluate"))
    result = run_search(recipe, tmp_path / "out", progress=False)
    trials = read_journal(tmp_path / "out" / "journal.jsonl")
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and len(trials) >= 8
    assert all("simulated out of memory" in t["error"] and t["F"] == [FAILED_F, FAILED_F] for t in failed)
    assert result.document["points"] and result.document["search"]["n_failed"] == len(failed)
    for point in result.document["points"]:
        assert json.loads((tmp_path / "out" / point["config_path"] / "adapter_config.json").read_text())["prefix_length"] < 4


def test_random_search_same_budget_and_strategy_registry(tmp_path, tiny_bert_dir, synthetic_task_dir):
    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                                      algorithm={"name": "random", "n_trials": 7, "pop_size": 3}))
    result = run_search(recipe, tmp_path / "out", progress=False)
    trials = read_journal(tmp_path / "out" / "journal.jsonl")
    search = [t for t in trials if t["kind"] == "search"]
    assert len(search) == 7 and len({t["key"] for t in search}) == 7
    assert result.document["search"]["algorithm"] == "random"
    assert set(STRATEGIES) == {"mobo", "nsga2", "prune", "random", "s3pet", "supernet"}
    with pytest.raises(ValueError, match=r"allowed: \['mobo', 'nsga2', 'prune', 'random', 's3pet', 'supernet'\]"):
        make_strategy("smac", 4, lambda x: x)


def test_nsga2_improves_on_its_first_generation(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """With a cheap deterministic objective, later generations reach a larger hypervolume than generation 0."""
    from peft_autoconfig.search.pareto import hypervolume

    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                                      algorithm={"name": "nsga2", "n_trials": 40, "pop_size": 8}, fidelity={"levels": [{}]}))
    result = run_search(recipe, tmp_path / "out", progress=False)
    trials = read_journal(tmp_path / "out" / "journal.jsonl")
    ref = result.document["reference_point"]
    first = np.array([t["F"] for t in trials[:8]])
    assert result.document["hypervolume"] > hypervolume(first, ref)


def test_search_problem_works_with_plain_pymoo():
    """The same problem runs under pymoo's own loop (`minimize`) with an injected objective."""
    from conftest import tiny_configs
    from pymoo.optimize import minimize

    from peft_autoconfig.search.problem import SearchProblem
    from peft_autoconfig.search.strategies import NSGA2Strategy
    from peft_autoconfig.search.space import SearchSpace

    space = SearchSpace(tiny_configs()["bert"])
    problem = SearchProblem(space, ["metric", "trainable_parameters"],
                            objective=lambda x: [-(1 - 1 / (1 + space.cost(x))), space.cost(x)])
    algorithm = NSGA2Strategy(pop_size=6, repair=space.repair).make_algorithm()
    result = minimize(problem, algorithm, ("n_gen", 3), seed=1)
    assert result.F.shape[1] == 2 and len(result.F) >= 1
    for x, f in zip(result.X, result.F):
        assert f[1] == space.cost(x) > 0
