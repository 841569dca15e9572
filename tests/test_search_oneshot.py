"""The one-shot strategy interface (`search.oneshot`): budgets, settings, the driver's re-training of what a one-shot
method returns, the cache that makes a resume skip the one-shot stage, and the errors of bad recipes."""

from __future__ import annotations

import json
from typing import ClassVar, Optional

import pytest
from test_search_fakes import write_recipe

from peft_autoconfig.front import config_to_dict
from peft_autoconfig.search import load_recipe, read_journal, run_search
from peft_autoconfig.search.oneshot import OneShotContext, OneShotResult, resolve_budgets
from peft_autoconfig.search.strategies.oneshot import OneShotStrategy
from peft_autoconfig.search.schema import RecipeError, RecipeModel
from peft_autoconfig.search.strategies import STRATEGIES
from peft_autoconfig.search.strategies.base import register_strategy


class GreedySettings(RecipeModel):
    where: ClassVar[tuple[str, ...]] = ("algorithm", "settings")
    shrink: float = 0.5


CONTEXTS: list[OneShotContext] = []


class GreedyOneShot(OneShotStrategy):
    """Per budget, the largest point halved until it fits: a stand-in for S3PET/pruning (no training)."""

    name = "test_greedy_oneshot"
    settings_model = GreedySettings

    def search(self, context: OneShotContext) -> list[OneShotResult]:
        CONTEXTS.append(context)
        space = context.space
        results = []
        for budget in context.budgets:
            x = space.largest_point()
            while space.cost(x) > budget:
                x = space.repair({k: (max(0, int(v * self.settings.shrink)) if isinstance(v, int) and not isinstance(v, bool) else v)
                                  for k, v in x.items()})
            results.append(OneShotResult(config=config_to_dict(space.decode(x)), trainable_parameters=space.cost(x),
                                         budget=budget, score=0.5, details={"x": x}))
        return results


class Unbudgeted(GreedyOneShot):
    name = "test_unbudgeted_oneshot"
    budgeted = False
    settings_model = None

    def search(self, context: OneShotContext) -> list[OneShotResult]:
        x = context.space.largest_point()
        return [OneShotResult(config=config_to_dict(context.space.decode(x)), trainable_parameters=context.space.cost(x))]


@pytest.fixture(autouse=True)
def registered():
    for cls in (GreedyOneShot, Unbudgeted):
        register_strategy(cls)
    yield
    for cls in (GreedyOneShot, Unbudgeted):
        STRATEGIES.pop(cls.name, None)


def test_resolve_budgets_counts_and_percentages():
    assert resolve_budgets([1000, "1%", "0.5%"], backbone_parameters=200_000, max_parameters=5000) == [1000, 2000]
    with pytest.raises(ValueError, match=r"budgets\[0\]`.*above the search space's largest configuration \(5,000\)"):
        resolve_budgets([6000], 200_000, 5000)
    with pytest.raises(ValueError, match=r"budgets\[1\]`.*at least 1 parameter"):
        resolve_budgets([10, "0.0001%"], 200_000, 5000)
    with pytest.raises(ValueError, match=r"budgets\[0\]`.*percentage of the backbone like '0.1%'"):
        resolve_budgets(["10k"], 200_000, 5000)


def test_oneshot_results_are_retrained_at_the_last_level_and_cached(tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(log))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    path = write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:logged_slow_evaluate",
        algorithm={"name": "test_greedy_oneshot", "settings": {"shrink": 0.5}},
        budgets=[500, 5000],
        evaluation={"selection_split": "validation", "report_split": "test", "eval_subset": 32},
        final={"train_subset": 128, "num_epochs": 1, "seeds": [0]},
    )
    out = tmp_path / "out"
    CONTEXTS.clear()
    result = run_search(load_recipe(path), out, progress=False)
    (context,) = CONTEXTS
    assert context.budgets == [500, 5000] and context.selection_split == "validation"
    assert context.fidelity == {"train_subset": 64, "max_steps": 2}  # the first level trains the one-shot model
    # one configuration per budget, each re-trained at the last level (128 examples, 4 steps) and in the final stage
    assert len(result.front) == 2
    assert [p["trainable_parameters"] <= b for p, b in zip(result.front, [500, 5000])] == [True, True]
    trials = read_journal(out / "journal.jsonl")
    searched = [t for t in trials if t["kind"] == "search"]
    assert {t["level"] for t in searched} == {1} and {t["name"] for t in searched} == {"budget=500", "budget=5000"}
    assert len([t for t in trials if t["kind"] == "final"]) == 2
    cached = json.loads((out / "oneshot.json").read_text())
    assert cached["algorithm"] == "test_greedy_oneshot" and [r["budget"] for r in cached["results"]] == [500, 5000]
    document = json.loads((out / "front.json").read_text())
    assert document["search"]["oneshot_time_s"] is not None
    assert (out / "front" / "p00" / "adapter_config.json").is_file()

    # a resume trusts oneshot.json and the journal: no one-shot stage, no training
    n_calls = len(log.read_text().splitlines())
    CONTEXTS.clear()
    run_search(load_recipe(path), out, progress=False)
    assert CONTEXTS == [] and len(log.read_text().splitlines()) == n_calls


def test_unbudgeted_oneshot_front_is_the_non_dominated_set(tmp_path, tiny_bert_dir, synthetic_task_dir):
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                        algorithm={"name": "test_unbudgeted_oneshot"})
    result = run_search(load_recipe(path), tmp_path / "out", progress=False)
    assert len(result.front) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithm": {"name": "test_greedy_oneshot"}}, r"recipe field `budgets`: algorithm 'test_greedy_oneshot' needs parameter budgets"),
        ({"algorithm": {"name": "nsga2"}, "budgets": [1000]}, r"recipe field `budgets` applies to algorithm \[.*'test_greedy_oneshot'.*\] only, not 'nsga2'"),
        ({"algorithm": {"name": "test_greedy_oneshot", "settings": {"shrnk": 0.5}}, "budgets": [1000]},
         r"unknown recipe field `algorithm.settings.shrnk`; allowed fields in `algorithm.settings`: \['shrink'\]"),
        ({"algorithm": {"name": "nsga2", "settings": {"shrink": 0.5}}}, r"`algorithm.settings` applies to algorithm \[.*\] only, not 'nsga2'"),
        ({"algorithm": {"name": "test_unbudgeted_oneshot", "settings": {"a": 1}}}, r"algorithm 'test_unbudgeted_oneshot' has no settings"),
    ],
)
def test_bad_oneshot_recipes_name_the_field(tmp_path, tiny_bert_dir, synthetic_task_dir, overrides, message):
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate", **overrides)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_budget_above_the_space_fails_before_training(tmp_path, tiny_bert_dir, synthetic_task_dir):
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                        algorithm={"name": "test_greedy_oneshot"}, budgets=["90%"])
    with pytest.raises(ValueError, match=r"recipe field `budgets\[0\]`: '90%' is .* above the search space's largest"):
        run_search(load_recipe(path), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "journal.jsonl").exists()
