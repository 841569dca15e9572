"""`algorithm.name: mobo`: BoTorch's qLogNEHVI over a GP of the metric and the exact parameter count.

The unit tests drive the strategy's ask/tell directly with an analytic "metric" of the point (no training); the
end-to-end test runs the driver with the fake evaluator of `test_search_fakes`.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import tiny_configs
from test_search_fakes import write_recipe

from peft_autoconfig.search import load_recipe, read_journal, run_search
from peft_autoconfig.search.journal import Journal
from peft_autoconfig.search.pareto import hypervolume
from peft_autoconfig.search.problem import SearchProblem
from peft_autoconfig.search.recipe import RecipeError, parse_recipe
from peft_autoconfig.search.space import SearchSpace, SpaceSpec
from peft_autoconfig.search.strategies import make_strategy
from peft_autoconfig.search.strategies.mobo import MoboStrategy
from peft_autoconfig.search.trial import FAILED_F, TrialRecord

pytest.importorskip("botorch")

OBJECTIVES = ["metric", "trainable_parameters"]


def make_space(modules=("serial_adapter", "parallel_adapter", "prefix")) -> SearchSpace:
    """Tiny BERT (hidden 32, 3 layers): 6 sizes per module and 3 layer flags, 1728 raw points."""
    return SearchSpace(tiny_configs()["bert"], SpaceSpec(modules=modules))


def toy_metric(space: SearchSpace, x: dict) -> float:
    """A known 'accuracy' of the point: saturating in capacity, the serial adapter worth most, layers count."""
    config = space.decode(x)
    layers = space.num_layers if config.layers_to_transform is None else len(config.layers_to_transform)
    capacity = layers * (config.serial_adapter_size + 0.4 * config.parallel_adapter_size + 0.1 * config.prefix_length)
    return 0.5 + 0.4 * (1 - np.exp(-capacity / 24)) - 0.02 * (config.prefix_length > 0)


def drive(strategy, space: SearchSpace, seed: int, n_trials: int, objectives=OBJECTIVES, fail=lambda x: False):
    """Ask/tell like the driver; returns the asked batches and the objective rows."""
    strategy.setup(SearchProblem(space, objectives), seed=seed)
    batches, F = [], []
    while len(F) < n_trials:
        points = strategy.ask()[: n_trials - len(F)]
        if not points:
            break
        rows = []
        for x in points:
            values = {"metric": -toy_metric(space, x), "trainable_parameters": space.cost(x), "wall_time_s": 1 + space.cost(x) / 1e4}
            rows.append([FAILED_F] * len(objectives) if fail(x) else [values[n] for n in objectives])
        strategy.tell(points, np.array(rows))
        batches.append(points)
        F.extend(rows)
    return batches, np.array(F)


def mobo(pop_size: int = 4, **options) -> MoboStrategy:
    return make_strategy("mobo", pop_size, lambda x: SPACE.repair(x), **options)


SPACE = make_space()


def test_proposals_are_valid_unique_repaired_points():
    batches, F = drive(mobo(), SPACE, seed=0, n_trials=12)
    points = [x for batch in batches for x in batch]
    keys = [SPACE.key(x) for x in points]
    assert len(points) == 12 and len(set(keys)) == 12
    assert all(SPACE.repair(x) == x and SPACE.is_valid(x) for x in points)
    assert [len(b) for b in batches] == [4, 4, 4]


def test_large_spaces_use_a_pool_with_local_search(monkeypatch):
    monkeypatch.setattr(MoboStrategy, "enumerate_limit", 100)  # 1728 points: no enumeration
    monkeypatch.setattr(MoboStrategy, "pool_size", 64)
    strategy = mobo()
    batches, _ = drive(strategy, SPACE, seed=0, n_trials=12)
    assert strategy.all_points is None
    keys = [SPACE.key(x) for batch in batches for x in batch]
    assert len(keys) == len(set(keys)) == 12


def test_failed_points_are_not_proposed_again_nor_modelled():
    strategy = mobo()
    batches, F = drive(strategy, SPACE, seed=1, n_trials=12, fail=lambda x: x["prefix_length"] >= 8)
    keys = [SPACE.key(x) for batch in batches for x in batch]
    assert len(keys) == len(set(keys)) == 12
    assert np.any(F[:, 0] == FAILED_F)
    assert len(strategy.points) == int(np.sum(F[:, 0] < FAILED_F))


def test_measured_objectives_get_their_own_surrogate():
    objectives = ["metric", "trainable_parameters", "wall_time_s"]
    batches, F = drive(mobo(), SPACE, seed=0, n_trials=8, objectives=objectives)
    assert F.shape == (8, 3) and len({SPACE.key(x) for b in batches for x in b}) == 8


def test_same_seed_and_told_values_propose_the_same_points():
    """What a resumed search relies on: replaying the told objectives reproduces every ask."""
    first, _ = drive(mobo(), SPACE, seed=3, n_trials=12)
    again, _ = drive(mobo(), SPACE, seed=3, n_trials=12)
    other, _ = drive(mobo(), SPACE, seed=4, n_trials=4)
    assert first == again
    assert first[0] != other[0]


def test_beats_random_search_at_the_same_small_budget():
    """Mean hypervolume over 3 seeds, 16 trials each (one Sobol batch, then 3 model-based batches)."""
    reference = [0.0, 1.1 * SPACE.max_cost()]
    results = {}
    for name in ("mobo", "random"):
        volumes = []
        for seed in range(3):
            _, F = drive(make_strategy(name, 4, SPACE.repair), SPACE, seed=seed, n_trials=16)
            volumes.append(hypervolume(F, reference))
        results[name] = np.mean(volumes)
    assert results["mobo"] > results["random"], results


# -- warm start ---------------------------------------------------------------------------------------------------
def write_journal(path, space: SearchSpace, points: list[dict], metric=toy_metric) -> None:
    """A journal of another search (another seed or task) holding these points as level-0 search trials."""
    journal = Journal(path, fingerprint="another-search")
    for i, x in enumerate(points):
        value = metric(space, x)
        journal.add(TrialRecord(
            trial_id=i, key=f"{i}|{space.key(x)}", kind="search", name=None, x=x, config=None, level=0, fidelity={},
            seed=7, status="ok", error=None, metric_name="accuracy", metric=value, eval_split="validation", n_eval=None,
            standard_error=None, trainable_parameters=space.cost(x), objectives={"accuracy": value},
            F=[-value, space.cost(x)], wall_time_s=1.0,
        ))


def test_warm_start_seeds_the_surrogate_and_skips_the_initial_design(tmp_path):
    """16 trials of another search (random points) make the first 8 trials of this one better than a cold start's."""
    warm_points = [x for batch in drive(make_strategy("random", 16, SPACE.repair), SPACE, seed=5, n_trials=16)[0] for x in batch]
    write_journal(tmp_path / "journal.jsonl", SPACE, warm_points)
    cold = mobo()
    warm = mobo(warm_start=str(tmp_path))  # a search folder holding journal.jsonl
    cold_batches, cold_F = drive(cold, SPACE, seed=0, n_trials=8)
    warm_batches, warm_F = drive(warm, SPACE, seed=0, n_trials=8)
    assert len(warm.warm) == 16
    assert warm_batches[0] != cold_batches[0]  # the Sobol design is skipped: n_initial (4) <= 16 warm records
    reference = [0.0, 1.1 * SPACE.max_cost()]
    assert hypervolume(warm_F, reference) > hypervolume(cold_F, reference)


def test_warm_start_with_a_measured_objective_keeps_the_initial_design(tmp_path):
    """Wall time is learnt from this run only, so warm records do not replace its Sobol design."""
    write_journal(tmp_path / "journal.jsonl", SPACE, [SPACE.largest_point(), SPACE.repair({**SPACE.largest_point(), "layer_1": False})])
    objectives = ["metric", "trainable_parameters", "wall_time_s"]
    warm_batches, F = drive(mobo(warm_start=str(tmp_path), n_initial=2), SPACE, seed=0, n_trials=8, objectives=objectives)
    cold_batches, _ = drive(mobo(n_initial=2), SPACE, seed=0, n_trials=4, objectives=objectives)
    assert warm_batches[0] == cold_batches[0] and F.shape == (8, 3)


def test_warm_start_from_another_space_is_refused(tmp_path):
    lora_space = make_space(("serial_adapter", "lora"))
    write_journal(tmp_path / "journal.jsonl", lora_space, [lora_space.largest_point()])
    strategy = mobo(warm_start=str(tmp_path / "journal.jsonl"))
    with pytest.raises(ValueError, match=r"`algorithm.warm_start`: a point of another search space \(missing \['parallel_adapter_size'"):
        strategy.setup(SearchProblem(SPACE, OBJECTIVES), seed=0)


# -- recipe check -------------------------------------------------------------------------------------------------
BASE = {"model": "m", "task": "rotten_tomatoes"}


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        ({"name": "mobo", "surrogate": "tpe"}, r"`algorithm.surrogate`: Input should be 'gp' or 'saas', got 'tpe'"),
        ({"name": "mobo", "n_initial": 0}, r"`algorithm.n_initial`: Input should be greater than or equal to 1, got 0"),
        ({"name": "mobo", "warm_start": "no/such/folder"}, r"`algorithm.warm_start`: no journal at '.*no/such/folder'"),
        ({"name": "nsga2", "surrogate": "gp"}, r"`algorithm.surrogate` applies to algorithm \['mobo'\] only, not 'nsga2'"),
        ({"name": "random", "n_initial": 4}, r"`algorithm.n_initial` applies to algorithm \['mobo'\] only, not 'random'"),
    ],
)
def test_bad_algorithm_values_name_the_field(algorithm, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({**BASE, "algorithm": algorithm})


def test_missing_botorch_fails_at_recipe_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "botorch", None)  # `import botorch` raises ImportError
    with pytest.raises(RecipeError, match=r'`algorithm.name`: `mobo` needs BoTorch .* `pip install "peft_autoconfig\[bo\]"`'):
        parse_recipe({**BASE, "algorithm": {"name": "mobo"}})
    parse_recipe({**BASE, "algorithm": {"name": "nsga2"}})  # the other strategies do not need it


def test_saas_without_numpyro_fails_at_recipe_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpyro", None)
    with pytest.raises(RecipeError, match=r"`algorithm.surrogate`: `saas` needs numpyro .*`pip install \"peft_autoconfig\[saas\]\"`"):
        parse_recipe({**BASE, "algorithm": {"name": "mobo", "surrogate": "saas"}})


def test_warm_start_path_resolves_against_the_recipe_and_unset_options_stay_out_of_the_fingerprint(tmp_path):
    (tmp_path / "old").mkdir()
    write_journal(tmp_path / "old" / "journal.jsonl", SPACE, [SPACE.largest_point()])
    recipe = parse_recipe({**BASE, "algorithm": {"name": "mobo", "warm_start": "old"}}, base_dir=tmp_path)
    assert recipe.algorithm.warm_start == str(tmp_path / "old")
    assert recipe.algorithm.options() == {"warm_start": str(tmp_path / "old")}
    plain = parse_recipe({**BASE, "algorithm": {"name": "nsga2"}})
    assert set(plain.model_dump(mode="json")["algorithm"]) == {"name", "n_trials", "pop_size"}


def test_saas_surrogate_proposes_valid_points(monkeypatch):
    pytest.importorskip("numpyro")
    monkeypatch.setattr(MoboStrategy, "saas_nuts", {"warmup_steps": 16, "num_samples": 16, "thinning": 4})
    batches, _ = drive(mobo(surrogate="saas"), SPACE, seed=0, n_trials=8)
    assert len({SPACE.key(x) for b in batches for x in b}) == 8


# -- through the driver -------------------------------------------------------------------------------------------
def test_search_through_the_driver_and_resume_mid_batch(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """A killed search (journal cut inside a batch) resumes to the journal of an uninterrupted run."""
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                        algorithm={"name": "mobo", "n_trials": 10, "pop_size": 4})
    recipe = load_recipe(path)
    reference = run_search(recipe, tmp_path / "reference", progress=False)
    trials = read_journal(tmp_path / "reference" / "journal.jsonl")
    search = [t for t in trials if t["kind"] == "search"]
    assert len(search) == 10 and len({t["key"] for t in search}) == 10
    assert reference.document["search"]["algorithm"] == "mobo" and reference.document["points"]
    assert any(t["kind"] == "promotion" and t["level"] == 1 for t in trials)
    # the strategy's own time per batch, with the surrogate fit and the acquisition split out
    timing = reference.document["search"]["strategy_time"]
    assert [b["n_points"] for b in timing["batches"]] == [4, 4, 2]
    assert [b["proposal"] for b in timing["batches"]] == ["initial", "bo", "bo"]
    assert [b["n_training_points"] for b in timing["batches"]] == [0, 4, 8]
    assert timing["batches"][0]["fit_s"] == 0.0 and all(b["fit_s"] > 0 and b["acquisition_s"] > 0 for b in timing["batches"][1:])
    assert timing["total_s"] == pytest.approx(sum(b["ask_s"] + b["tell_s"] for b in timing["batches"]))
    assert all(b["fit_s"] + b["acquisition_s"] <= b["ask_s"] + 1e-6 for b in timing["batches"])
    assert 0 < timing["share_of_phase"] <= 1 and 0 < timing["share_of_trials"] < 1

    lines = (tmp_path / "reference" / "journal.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "journal.jsonl").write_text("".join(lines[: 1 + 6]))  # header + 6 trials: mid second batch
    resumed = run_search(recipe, tmp_path / "killed", progress=False)
    assert resumed.n_evaluated == len(trials) - 6
    again = read_journal(tmp_path / "killed" / "journal.jsonl")
    assert [(t["trial_id"], t["key"], t["F"]) for t in again] == [(t["trial_id"], t["key"], t["F"]) for t in trials]

    # the recipe's options reach the strategy: a warm start from that search, under another seed
    warm_recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, seed=1,
                                           evaluator="test_search_fakes:fake_evaluate", fidelity={"levels": [{}]},
                                           algorithm={"name": "mobo", "n_trials": 4, "pop_size": 4, "warm_start": "reference"}))
    cold_recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, seed=1,
                                           evaluator="test_search_fakes:fake_evaluate", fidelity={"levels": [{}]},
                                           algorithm={"name": "mobo", "n_trials": 4, "pop_size": 4}))
    run_search(warm_recipe, tmp_path / "warm", progress=False)
    run_search(cold_recipe, tmp_path / "cold", progress=False)
    first = lambda folder: [t["key"] for t in read_journal(tmp_path / folder / "journal.jsonl")]  # noqa: E731
    assert first("warm") != first("cold")


def test_a_small_space_runs_out_and_the_search_ends_early():
    small = SearchSpace(tiny_configs()["bert"], SpaceSpec(modules=("prefix",), sizes={"prefix": (0, 4)}))
    batches, F = drive(make_strategy("mobo", 4, small.repair), small, seed=0, n_trials=20)
    assert len(F) == 7 == len({small.key(x) for b in batches for x in b})  # 3 layers: 7 valid points once, then []


def test_pop_size_larger_than_the_space_is_refused(tmp_path, tiny_bert_dir, synthetic_task_dir):
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                        algorithm={"name": "mobo", "n_trials": 8, "pop_size": 8},
                        space={"modules": ["prefix"], "sizes": {"prefix": [0, 4]}})
    with pytest.raises(ValueError, match=r"`algorithm.pop_size` \(8\) is larger than the search space \(3 distinct points\)"):
        run_search(load_recipe(path), tmp_path / "out", progress=False)
