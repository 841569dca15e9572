"""benchmarks/fidelity_noise.py: the last fidelity level re-trained at other seeds, and the Kendall taus that say how
much of the low fidelity's ranking error is the last level's own noise."""

from __future__ import annotations

import json

import pytest
import yaml
from scipy.stats import kendalltau

from peft_autoconfig.search import load_recipe, read_journal, run_search
from test_benchmarks import load_script
from test_search_fakes import write_recipe


def _values(journal, level):
    return {json.dumps(t["x"], sort_keys=True): t["metric"] for t in read_journal(journal)
            if t["level"] == level and t["kind"] in ("search", "promotion") and t["status"] == "ok"}


def _searched(tmp_path, tiny_bert_dir, synthetic_task_dir, n_trials):
    """A random search of `n_trials` with seed-dependent fake scores: its recipe and folder."""
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:seed_noisy_evaluate",
                        algorithm={"name": "random", "n_trials": n_trials})
    run = tmp_path / "run"
    run_search(load_recipe(path), run, progress=False)
    return path, run


def test_other_seeds_of_the_last_level_give_the_ceiling_and_a_less_noisy_reference(tmp_path, tiny_bert_dir,
                                                                                   synthetic_task_dir):
    noise = load_script("fidelity_noise")
    path, run = _searched(tmp_path, tiny_bert_dir, synthetic_task_dir, 8)
    first, last0 = _values(run / "journal.jsonl", 0), _values(run / "journal.jsonl", 1)
    assert len(last0) >= 3

    results = noise.main(["--recipe", str(path), "--run", str(run), "--seeds", "1", "2"])
    retrained = read_journal(run / "noise-s1" / "journal.jsonl")
    assert {t["seed"] for t in retrained} == {1} and {t["level"] for t in retrained} == {1}
    last1, last2 = _values(run / "noise-s1" / "journal.jsonl", 1), _values(run / "noise-s2" / "journal.jsonl", 1)
    assert set(last1) == set(last2) == set(last0) and last1 != last0   # the same points, other scores
    keys = sorted(last0)
    assert results["n_points"] == len(keys) and results["seeds"] == [0, 1, 2]
    assert results["last_vs_last"]["0-1"]["tau"] == pytest.approx(kendalltau([last0[k] for k in keys],
                                                                             [last1[k] for k in keys])[0])
    mean = [(last0[k] + last1[k] + last2[k]) / 3 for k in keys]
    assert results["first_vs_last"]["mean"]["tau"] == pytest.approx(kendalltau([first[k] for k in keys], mean)[0])
    assert results["first_vs_last"]["seed 2"]["n"] == len(keys)
    assert results["last_vs_last"]["1-2"]["tau"] == pytest.approx(kendalltau([last1[k] for k in keys],
                                                                             [last2[k] for k in keys])[0])
    assert list(results["last_vs_last"]) == ["0-1", "0-2", "1-2"]   # every pair of seeds, not only the run's own
    sizes = {json.dumps(t["x"], sort_keys=True): t["trainable_parameters"] for t in read_journal(run / "journal.jsonl")
             if t["x"] is not None}
    assert results["with_parameters"]["last level (mean over its seeds)"]["tau"] == pytest.approx(
        kendalltau(mean, [sizes[k] for k in keys])[0])
    assert "last level, seeds 0-2" in (run / "noise.md").read_text()

    noise.main(["--recipe", str(path), "--run", str(run), "--seeds", "1"])   # resumed: nothing trained again
    assert len(read_journal(run / "noise-s1" / "journal.jsonl")) == len(retrained)
    with pytest.raises(ValueError, match="`--seeds`: 0 is the run's own seed"):
        noise.main(["--recipe", str(path), "--run", str(run), "--seeds", "0"])


def test_a_recipe_with_one_level_is_refused(tmp_path, tiny_bert_dir, synthetic_task_dir):
    noise = load_script("fidelity_noise")
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                        fidelity={"levels": [{"train_subset": 64, "max_steps": 2}]})
    with pytest.raises(ValueError, match="`fidelity.levels`: the recipe has one level"):
        noise.main(["--recipe", str(path), "--run", str(tmp_path / "nothing"), "--seeds", "1"])


def test_a_folder_without_a_journal_is_named(tmp_path, tiny_bert_dir, synthetic_task_dir):
    noise = load_script("fidelity_noise")
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate")
    with pytest.raises(FileNotFoundError, match="`--run`: .* holds no search journal"):
        noise.main(["--recipe", str(path), "--run", str(tmp_path / "nothing"), "--seeds", "1"])


def test_points_from_a_file_are_trained_at_both_levels_then_at_other_seeds(tmp_path, tiny_bert_dir,
                                                                           synthetic_task_dir):
    noise = load_script("fidelity_noise")
    path, source = _searched(tmp_path, tiny_bert_dir, synthetic_task_dir, 6)
    wanted = {json.dumps(t["x"], sort_keys=True) for t in read_journal(source / "journal.jsonl") if t["x"]}
    listed = tmp_path / "points.jsonl"   # a file of points with other fields, one point twice
    rows = [{"x": json.loads(k), "cold": {"metric": 0.5}} for k in sorted(wanted)]
    listed.write_text("\n".join(json.dumps(r) for r in rows + rows[:1]) + "\n")

    out = tmp_path / "random_points"
    results = noise.main(["--recipe", str(path), "--run", str(out), "--points-from", str(listed), "--seeds", "1"])
    trained = read_journal(out / "points" / "journal.jsonl")
    assert {t["level"] for t in trained} == {0, 1} and {t["seed"] for t in trained} == {0}
    assert set(_values(out / "points" / "journal.jsonl", 0)) == set(_values(out / "points" / "journal.jsonl", 1)) == wanted
    assert set(_values(out / "noise-s1" / "journal.jsonl", 1)) == wanted
    assert results["n_points"] == len(wanted) and results["first_vs_last"]["seed 0"]["n"] == len(wanted)

    noise.main(["--recipe", str(path), "--run", str(out), "--points-from", str(listed), "--seeds", "1"])
    assert len(read_journal(out / "points" / "journal.jsonl")) == len(trained)   # resumed: nothing trained again

    both = noise.main(["--recipe", str(path), "--run", str(out), "--points-from", str(listed), "--seeds", "1", "2",
                       "--first-too"])   # level 0 at the other seeds too: seed 1 adds level 0 only
    seed1 = read_journal(out / "noise-s1" / "journal.jsonl")
    assert sorted(t["level"] for t in seed1) == [0] * len(wanted) + [1] * len(wanted)
    first = {s: _values(out / folder / "journal.jsonl", 0) for s, folder in [(0, "points"), (1, "noise-s1"), (2, "noise-s2")]}
    last = {s: _values(out / folder / "journal.jsonl", 1) for s, folder in [(0, "points"), (1, "noise-s1"), (2, "noise-s2")]}
    keys = sorted(wanted)
    assert both["first_seeds"] == [0, 1, 2] and first[1] != first[0]
    assert both["first_vs_first"]["0-2"]["tau"] == pytest.approx(kendalltau([first[0][k] for k in keys],
                                                                            [first[2][k] for k in keys])[0])
    means = [[sum(values[s][k] for s in (0, 1, 2)) / 3 for k in keys] for values in (first, last)]
    assert both["first_mean_vs_last_mean"]["tau"] == pytest.approx(kendalltau(*means)[0])
    assert "mean of level 0 over seeds [0, 1, 2]" in (out / "noise.md").read_text()

    (out / "noise-s2" / "journal.jsonl").write_text("".join(   # seed 2 stopped after its level 0
        line + "\n" for line in (out / "noise-s2" / "journal.jsonl").read_text().splitlines() if '"level": 1' not in line))
    partial = noise.main(["--recipe", str(path), "--run", str(out), "--points-from", str(listed), "--seeds", "1", "2",
                          "--first-too", "--report-only"])
    assert len(read_journal(out / "noise-s2" / "journal.jsonl")) == len(wanted)   # nothing trained
    assert partial["seeds"] == [0, 1] and partial["first_seeds"] == [0, 1, 2]
    listed.write_text('{"cold": {"metric": 0.5}}\n')
    with pytest.raises(ValueError, match="`--points-from`: line 1 .* has no point"):
        noise.main(["--recipe", str(path), "--run", str(out), "--points-from", str(listed), "--seeds", "1"])
    with pytest.raises(FileNotFoundError, match="`--points-from`: .* is not a file"):
        noise.main(["--recipe", str(path), "--run", str(out), "--points-from", str(tmp_path / "no"), "--seeds", "1"])


def test_last_level_values_measured_before_are_reused_not_trained(tmp_path, tiny_bert_dir, synthetic_task_dir):
    noise = load_script("fidelity_noise")
    path, source = _searched(tmp_path, tiny_bert_dir, synthetic_task_dir, 6)
    wanted = sorted({json.dumps(t["x"], sort_keys=True) for t in read_journal(source / "journal.jsonl") if t["x"]})
    listed, reference = tmp_path / "points.jsonl", tmp_path / "seed3.jsonl"
    listed.write_text("".join(json.dumps({"x": json.loads(k)}) + "\n" for k in wanted))
    made_up = {k: 0.5 + i / 100 for i, k in enumerate(wanted)}   # increasing: a known order to compare with
    reference.write_text("".join(json.dumps({"x": json.loads(k), "cold": {"metric": v}}) + "\n" for k, v in made_up.items()))

    out = tmp_path / "out"
    results = noise.main(["--recipe", str(path), "--run", str(out), "--points-from", str(listed), "--seeds", "3",
                          "--reference", f"3={reference}"])
    assert not (out / "noise-s3").exists()   # nothing trained at seed 3
    last0 = _values(out / "points" / "journal.jsonl", 1)
    assert results["last_vs_last"]["0-3"]["tau"] == pytest.approx(kendalltau([last0[k] for k in wanted],
                                                                             [made_up[k] for k in wanted])[0])
    # the recipe's own seed from a file: only level 0 is trained in points/
    fresh = tmp_path / "fresh"
    both = noise.main(["--recipe", str(path), "--run", str(fresh), "--points-from", str(listed), "--seeds", "3",
                       "--reference", f"0={reference}", "--reference", f"3={reference}", "--reference", f"5={reference}"])
    assert {t["level"] for t in read_journal(fresh / "points" / "journal.jsonl")} == {0}
    assert both["seeds"] == [0, 3, 5] and both["last_vs_last"]["0-5"]["tau"] == pytest.approx(1.0)   # 5: not in --seeds

    logged = json.dumps({"seed": 4, "eval_split": "validation", "train_subset": 1, "num_epochs": 1})
    reference.write_text(json.dumps({"x": json.loads(wanted[0]), "cold": {"metric": 0.5}, "standalone": logged}) + "\n")
    with pytest.raises(ValueError, match="`--reference`: line 1 .* was not trained as the recipe's last level at seed 3"):
        noise.main(["--recipe", str(path), "--run", str(out), "--seeds", "3", "--reference", f"3={reference}"])
    with pytest.raises(ValueError, match="`--reference`: '3:x' is not SEED=FILE"):
        noise.main(["--recipe", str(path), "--run", str(out), "--seeds", "3", "--reference", "3:x"])


def test_another_studys_journal_is_a_reference_for_its_last_level(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`--reference SEED=journal.jsonl`: a search journal's last-level trials at SEED (e.g. a study with another level
    0) are reused; level-0 trials are skipped; another seed, split or training protocol is refused."""
    noise = load_script("fidelity_noise")
    path, source = _searched(tmp_path, tiny_bert_dir, synthetic_task_dir, 6)
    journal = source / "journal.jsonl"
    last = _values(journal, 1)
    other = tmp_path / "other.yaml"   # the same protocol with another level 0: the other study's recipe
    raw = yaml.safe_load(path.read_text())
    raw["fidelity"]["levels"][0]["batch_size"] = 4
    other.write_text(yaml.safe_dump(raw))
    listed = tmp_path / "points.jsonl"
    listed.write_text("".join(json.dumps({"x": json.loads(k)}) + "\n" for k in last))
    out = tmp_path / "out"
    results = noise.main(["--recipe", str(other), "--run", str(out), "--points-from", str(listed), "--seeds", "7",
                          "--reference", f"0={journal}"])
    assert {t["level"] for t in read_journal(out / "points" / "journal.jsonl")} == {0}   # the last level reused
    assert results["n_points"] == len(last)
    assert results["spread_across_points"]["0"] == [min(last.values()), max(last.values())]
    with pytest.raises(ValueError, match=r"`--reference`: line \d+ of .* was not trained as the recipe's last level at seed 7"):
        noise.main(["--recipe", str(other), "--run", str(out), "--seeds", "7", "--reference", f"7={journal}",
                    "--report-only"])
    raw["training"] = {**(raw.get("training") or {}), "batch_size": 3}
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"`--reference`: the journal .* another `training` than the recipe's"):
        noise.main(["--recipe", str(other), "--run", str(out), "--seeds", "7", "--reference", f"0={journal}",
                    "--report-only"])


def test_the_noiseless_ceiling_matches_a_simulation_of_seed_noise():
    """Under the model the estimate assumes (true values plus independent normal noise per seed), the formula's
    inputs and outputs are what a large simulation measures."""
    import numpy as np

    noise = load_script("fidelity_noise")
    rng = np.random.default_rng(0)
    truth = rng.normal(size=20000)
    seeds = [truth + rng.normal(scale=0.9, size=truth.size) for _ in range(2)]
    seed_tau = kendalltau(*seeds)[0]
    ceiling = noise.noiseless_ceiling(seed_tau, 2)
    assert ceiling["against_one_seed"] == pytest.approx(kendalltau(truth, seeds[0])[0], abs=0.01)
    assert ceiling["against_mean_of_2"] == pytest.approx(kendalltau(truth, (seeds[0] + seeds[1]) / 2)[0], abs=0.01)
    assert noise.noiseless_ceiling(-0.1, 2) is None and noise.noiseless_ceiling(None, 2) is None
