"""benchmarks/supernet_vs_search.py: the `supernet` search against a trial-by-trial search at equal wall time."""

import json

import pytest
from test_search_fakes import write_recipe

SPACE = {"modules": ["serial_adapter", "lora"], "sizes": {"serial_adapter": [0, 2, 8], "lora": [0, 2, 4]}}
LEVELS = {"levels": [{"train_subset": 64, "max_steps": 4}, {"train_subset": 64, "max_steps": 6}]}


def _dir(path):
    path.mkdir(parents=True)
    return path


def _trial(x, level, metric, parameters, end, wall=10.0):
    return {"x": x, "level": level, "metric": metric, "trainable_parameters": parameters, "end": end,
            "start": end - wall}


def test_front_keeps_each_configuration_at_its_highest_level():
    from benchmarks.supernet_vs_search import front_of

    a, b, c = {"s": 1}, {"s": 2}, {"s": 3}
    trials = [_trial(a, 0, 0.60, 10, 1), _trial(a, 1, 0.70, 10, 5),   # a promoted: its level-1 result counts
              _trial(b, 0, 0.80, 20, 2),                               # b: larger and better, kept
              _trial(c, 0, 0.65, 30, 3)]                               # c: dominated by b
    front = front_of(trials)
    assert [(t["x"], t["level"], t["metric"]) for t in front] == [(a, 1, 0.70), (b, 0, 0.80)]


def test_one_shot_trials_without_a_point_are_told_apart_by_their_config():
    """A one-shot search journals its re-trained configurations with `x` null: each is still its own configuration
    (they once all collapsed into one, leaving a one-point front)."""
    from benchmarks.supernet_vs_search import front_of

    small = {**_trial(None, 0, 0.77, 8, 1), "config": {"lora_rank": 4}}
    large = {**_trial(None, 0, 0.79, 100, 2), "config": {"lora_rank": 8}}
    assert [t["config"] for t in front_of([small, large])] == [{"lora_rank": 4}, {"lora_rank": 8}]


def test_supernet_against_nsga2_at_equal_wall_time(tmp_path, tiny_bert_dir, synthetic_task_dir):
    from benchmarks.search_quality import normalised_hv
    from benchmarks.supernet_vs_search import main

    from peft_autoconfig.search import load_recipe, run_search

    supernet = write_recipe(_dir(tmp_path / "s"), tiny_bert_dir, synthetic_task_dir, space=SPACE, fidelity=LEVELS,
                            algorithm={"name": "supernet", "settings": {"inner_trials": 20, "inner_pop_size": 4,
                                                                        "max_results": 2, "num_random": 1}})
    nsga2 = write_recipe(_dir(tmp_path / "n"), tiny_bert_dir, synthetic_task_dir, space=SPACE, fidelity=LEVELS,
                         algorithm={"name": "nsga2", "n_trials": 6, "pop_size": 3})
    run_search(load_recipe(supernet), tmp_path / "rs", progress=False)
    run_search(load_recipe(nsga2), tmp_path / "rn", progress=False)

    results = main(["--supernet", str(tmp_path / "rs"), "--search", str(tmp_path / "rn"), "--out",
                    str(tmp_path / "cmp"), "--backbone-parameters", "100000"])
    s, o = results["supernet"], results["search"]
    oneshot = json.loads((tmp_path / "rs" / "oneshot.json").read_text())["wall_time_s"]
    assert s["oneshot_s"] == pytest.approx(oneshot) and s["total_s"] == pytest.approx(oneshot + s["retraining_s"])
    assert s["front"] and all(p["level"] == 1 for p in s["front"])   # re-trained at the last level
    assert s["hv"] == pytest.approx(normalised_hv([(p["metric"], p["trainable_parameters"]) for p in s["front"]],
                                                  100000))
    elapsed = [e for e, _ in results["hv_curve"]]
    assert elapsed == sorted(elapsed) and o["trials"] == len(elapsed)
    assert o["trials_by_then"] == sum(e <= s["total_s"] for e in elapsed)
    hv = [v for _, v in results["hv_curve"]]
    assert all(later >= earlier - 1e-12 for earlier, later in zip(hv, hv[1:]))   # a front only grows
    report = (tmp_path / "cmp" / "supernet_vs_search.md").read_text()
    assert report.startswith("# `supernet` search vs a trial-by-trial search at equal wall time")
    assert (tmp_path / "cmp" / "supernet_vs_search.png").stat().st_size > 0

    with pytest.raises(ValueError, match=r"`--supernet`: .* is a 'nsga2' search|`--supernet`: .*oneshot.json"):
        main(["--supernet", str(tmp_path / "rn"), "--search", str(tmp_path / "rs"), "--out", str(tmp_path / "x"),
              "--backbone-parameters", "100000"])


def test_a_reused_super_pet_counts_its_training_time(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """A `supernet` search that reused another's super-PET (`settings.superpet`) did not train it in its own one-shot
    stage: the super-PET's training time (its manifest's) is added to its wall time."""
    from benchmarks.supernet_vs_search import main

    from peft_autoconfig.search import load_recipe, run_search

    settings = {"inner_trials": 8, "inner_pop_size": 4, "max_results": 1, "num_random": 1}
    first = write_recipe(_dir(tmp_path / "a"), tiny_bert_dir, synthetic_task_dir, space=SPACE, fidelity=LEVELS,
                         algorithm={"name": "supernet", "settings": settings})
    run_search(load_recipe(first), tmp_path / "ra", progress=False)
    trained = json.loads((tmp_path / "ra" / "oneshot" / "superpet" / "superpet.json").read_text())["wall_time_s"]
    again = write_recipe(_dir(tmp_path / "b"), tiny_bert_dir, synthetic_task_dir, space=SPACE, fidelity=LEVELS,
                         algorithm={"name": "supernet",
                                    "settings": {**settings, "superpet": str(tmp_path / "ra" / "oneshot" / "superpet")}})
    run_search(load_recipe(again), tmp_path / "rb", progress=False)

    own = main(["--supernet", str(tmp_path / "ra"), "--search", str(tmp_path / "ra"), "--out", str(tmp_path / "c1"),
                "--backbone-parameters", "100000"])["supernet"]
    reused = main(["--supernet", str(tmp_path / "rb"), "--search", str(tmp_path / "ra"), "--out", str(tmp_path / "c2"),
                   "--backbone-parameters", "100000"])["supernet"]
    assert own["superpet_reused_s"] == 0.0
    assert trained > 0 and reused["superpet_reused_s"] == pytest.approx(trained)
    assert reused["total_s"] == pytest.approx(reused["oneshot_s"] + reused["retraining_s"] + trained)
    assert "the reused super-PET's training" in (tmp_path / "c2" / "supernet_vs_search.md").read_text()
