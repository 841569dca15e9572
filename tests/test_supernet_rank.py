"""benchmarks/supernet_rank.py on a tiny model: stand-alone runs at the final budget are cached and reused across
super-PETs, warm starts only count for the super-PET whose slices they started from, and the report is complete."""

import json

import numpy as np

from test_search_fakes import write_recipe


def _recipe(tmp_path, tiny_bert_dir, synthetic_task_dir):
    return write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir,
        algorithm={"name": "supernet", "settings": {"num_random": 1, "score_subset": 16}},
        space={"modules": ["serial_adapter", "lora"], "sizes": {"serial_adapter": [0, 2, 8], "lora": [0, 2, 4]}},
        fidelity={"levels": [{"train_subset": 32, "max_steps": 2}]},
        final={"train_subset": 32, "num_epochs": 1, "seeds": [0]},
    )


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_final_budget_runs_are_reused_and_warm_starts_follow_the_super_pet(tmp_path, tiny_bert_dir, synthetic_task_dir):
    from benchmarks.supernet_rank import main

    recipe = str(_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir))
    first = tmp_path / "a"
    results = main(["--recipe", recipe, "--out", str(first), "--n", "3", "--budget", "final", "--warm-start",
                    "--score-full"])
    log = _lines(first / "standalone-final.jsonl")
    last = {r["key"]: r for r in log}   # append-only: the last line of a key is its row
    assert len(log) == 6 and len(last) == 3 and all("cold" in r and "warm" in r for r in last.values())
    assert results["n"] == 3 and results["budget"] == "final" and results["stand-alone"]["train_subset"] == 32
    assert set(results["superpet_vs_standalone"]) >= {"kendall_tau", "kendall_p", "spearman_rho", "n"}
    assert "superpet_full_vs_standalone" in results and "warm_gain_mean" in results
    assert (first / "results-final.md").read_text().startswith("# super-PET ranking vs stand-alone training")

    # the same points, a super-PET trained at other rates: the cold runs are reused, the warm ones re-run
    second = tmp_path / "b"
    second.mkdir()
    (second / "standalone-final.jsonl").write_text((first / "standalone-final.jsonl").read_text())
    again = main(["--recipe", recipe, "--out", str(second), "--n", "3", "--budget", "final", "--warm-start",
                  "--learning-rate-scale", "0.5"])
    added = _lines(second / "standalone-final.jsonl")[len(log):]
    assert len(added) == 3 and all(r["warm_from"] != log[-1]["warm_from"] for r in added)
    assert {r["key"] for r in added} == set(last)
    assert [r["cold"] for r in again["rows"]] == [r["cold"] for r in results["rows"]]
    assert again["learning_rate_scale"] == 0.5


def test_scores_only_trains_no_stand_alone_run(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`--scores-only`: the super-PET is trained and its slices scored, nothing else; stand-alone results already in
    OUT give a partial Kendall tau."""
    from benchmarks.supernet_rank import main

    recipe = str(_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir))
    out = tmp_path / "a"
    results = main(["--recipe", recipe, "--out", str(out), "--n", "4", "--scores-only"])
    assert not (out / "standalone.jsonl").exists() and results["n_with_standalone"] == 0
    assert results["partial_vs_standalone"] is None
    scores = [r["superpet"] for r in results["rows"]]
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert results["at_most_common"] == max(scores.count(s) for s in scores)
    assert json.loads((out / "scores.json").read_text())["rows"] == results["rows"]

    full = main(["--recipe", recipe, "--out", str(out), "--n", "4"])   # the stand-alone runs, then again scores only
    again = main(["--recipe", recipe, "--out", str(out), "--n", "4", "--scores-only"])
    assert again["n_with_standalone"] == 4
    np.testing.assert_equal(again["partial_vs_standalone"], full["superpet_vs_standalone"])   # nan == nan here


def test_scores_only_summary_on_known_scores(tmp_path):
    """`scores_only`: the most common score is counted on the whole split when scored there, and the partial tau
    uses only the rows with a stand-alone result, on the same scores as the full report."""
    from scipy.stats import kendalltau

    from benchmarks.supernet_rank import scores_only

    subset = [0.60, 0.70, 0.65, 0.80, 0.55]
    whole = [0.58, 0.58, 0.66, 0.79, 0.58]
    cold = [0.70, 0.78, 0.74, None, 0.72]
    rows = [{"x": {"i": i}, "parameters": 10 * (i + 1), "superpet": s, "superpet_full": w,
             **({"cold": {"metric": c}} if c is not None else {})} for i, (s, w, c) in enumerate(zip(subset, whole, cold))]
    manifest = {"metric": 0.81, "training": {"run": {}}, "wall_time_s": 5.0}
    results = scores_only(tmp_path, rows, manifest, 1.0)
    assert results["most_common_score"] == 0.58 and results["at_most_common"] == 3
    assert results["score_range"] == [0.58, 0.79] and results["n_with_standalone"] == 4
    kept = [0, 1, 2, 4]
    expected = kendalltau([subset[i] for i in kept], [cold[i] for i in kept]).statistic
    assert results["partial_vs_standalone"]["kendall_tau"] == np.float64(expected)
    assert results["partial_vs_standalone"]["n"] == 4
    expected_full = kendalltau([whole[i] for i in kept], [cold[i] for i in kept]).statistic
    assert results["partial_full_vs_standalone"]["kendall_tau"] == np.float64(expected_full)
    assert json.loads((tmp_path / "scores.json").read_text())["at_most_common"] == 3


def test_a_cached_stand_alone_run_of_another_budget_is_not_reused(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """Rows of `standalone.jsonl` carry what their stand-alone runs were trained with; a log copied from a folder
    whose recipe trained at another last level (here 3 steps instead of 2) is not compared against: re-trained."""
    from benchmarks.supernet_rank import main

    first = tmp_path / "a"
    main(["--recipe", str(_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir)), "--out", str(first), "--n", "2"])
    rows = _lines(first / "standalone.jsonl")
    assert len(rows) == 2 and all(json.loads(r["standalone"])["max_steps"] == 2 for r in rows)

    second = tmp_path / "b"
    second.mkdir()
    (second / "standalone.jsonl").write_text((first / "standalone.jsonl").read_text())
    longer = write_recipe(tmp_path / "b", tiny_bert_dir, synthetic_task_dir,
                          algorithm={"name": "supernet", "settings": {"num_random": 1, "score_subset": 16}},
                          space={"modules": ["serial_adapter", "lora"],
                                 "sizes": {"serial_adapter": [0, 2, 8], "lora": [0, 2, 4]}},
                          fidelity={"levels": [{"train_subset": 32, "max_steps": 3}]})
    partial = main(["--recipe", str(longer), "--out", str(second), "--n", "2", "--scores-only"])
    assert partial["n_with_standalone"] == 0   # the copied runs are of the 2-step level
    main(["--recipe", str(longer), "--out", str(second), "--n", "2"])
    added = _lines(second / "standalone.jsonl")[2:]
    assert len(added) == 2 and all(json.loads(r["standalone"])["max_steps"] == 3 for r in added)


def test_another_seed_trains_the_same_points_again(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`--seed`: the stand-alone runs of another replicate of the budget; the cached runs of the recipe's seed stay
    in the log and are not taken for them."""
    from benchmarks.supernet_rank import main

    recipe, out = str(_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir)), tmp_path / "a"
    first = main(["--recipe", recipe, "--out", str(out), "--n", "2"])
    again = main(["--recipe", recipe, "--out", str(out), "--n", "2", "--seed", "1"])
    rows = _lines(out / "standalone.jsonl")
    assert [json.loads(r["standalone"])["seed"] for r in rows] == [0, 0, 1, 1]
    assert first["stand-alone"]["seed"] == 0 and again["stand-alone"]["seed"] == 1
    assert [r["x"] for r in again["rows"]] == [r["x"] for r in first["rows"]]


def test_points_from_a_supernet_search_at_the_final_budget_on_the_report_split(tmp_path, tiny_bert_dir,
                                                                               synthetic_task_dir):
    """`--points-from RUN --budget final --split report`: the configurations the search returned (not random points),
    trained cold and warm at the final budget and scored on the report split, as the search's final stage scores;
    a search whose super-PET was trained otherwise than the recipe's is refused, naming the option, before training."""
    import pytest
    import yaml

    from benchmarks.supernet_rank import main
    from peft_autoconfig.search import load_recipe, run_search

    recipe = _recipe(tmp_path, tiny_bert_dir, synthetic_task_dir)
    data = yaml.safe_load(recipe.read_text())
    data["task"]["data_files"]["test"] = str(synthetic_task_dir / "test.csv")
    data["evaluation"]["report_split"] = "test"
    data["algorithm"]["settings"].update({"inner_trials": 6, "inner_pop_size": 2, "max_results": 2})
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    search = tmp_path / "search"
    run_search(load_recipe(recipe), search, progress=False)
    returned = [r["details"]["x"] for r in json.loads((search / "oneshot.json").read_text())["results"]]

    out = tmp_path / "rank"
    results = main(["--recipe", str(recipe), "--out", str(out), "--points-from", str(search), "--budget", "final",
                    "--split", "report", "--warm-start"])
    assert [r["x"] for r in results["rows"]] == returned and results["n"] == len(returned)
    assert results["stand-alone"]["eval_split"] == "test" and results["points_from"] == str(search)
    rows = _lines(out / "standalone-final-report-search.jsonl")
    assert all(json.loads(r["standalone"])["eval_split"] == "test" for r in rows)
    assert all("cold" in r and "warm" in r for r in results["rows"])
    assert (out / "slices-final-report-search" / "0").is_dir()

    with pytest.raises(ValueError, match="--points-from"):
        main(["--recipe", str(recipe), "--out", str(tmp_path / "other"), "--points-from", str(search),
              "--learning-rate-scale", "0.5"])
    assert not (tmp_path / "other" / "superpet").exists()   # refused before a super-PET of its own was trained
    with pytest.raises(FileNotFoundError, match="--points-from"):
        main(["--recipe", str(recipe), "--out", str(out), "--points-from", str(tmp_path)])
