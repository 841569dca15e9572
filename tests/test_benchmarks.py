"""Smoke runs of the benchmark scripts, so they cannot rot (figures are not asserted: no timed tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from peft_autoconfig.search import read_journal

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_overhead_smoke_measures_every_method(capsys):
    overhead = load_script("overhead")
    rows = overhead.main(["--smoke"])
    names = [row["method"] for row in rows]
    assert names == [m.name for m in overhead.METHODS]
    by_name = {row["method"]: row for row in rows}
    assert by_name[overhead.PEFT_LORA]["time_vs_peft_lora"] == 1.0
    assert by_name[overhead.FULL]["time_vs_full"] == 1.0
    # same LoRA, same trainable parameters (head included) as peft's
    assert by_name["ours LoRA r=8 q,v"]["trainable"] == by_name[overhead.PEFT_LORA]["trainable"]
    assert all(row["time_s"] > 0 and row["memory_bytes"] > 0 for row in rows)
    # full fine-tuning holds gradients + AdamW state for every weight: more step memory than any PET method that trains
    # fewer weights (UniPELT's 512-wide prefix MLP, folded on save, trains more than this toy model has)
    full = by_name[overhead.FULL]
    smaller = [row for row in rows if row["method"] != overhead.FULL and row["trainable"] < full["trainable"]]
    assert len(smaller) >= len(rows) - 2
    assert all(row["memory_bytes"] < full["memory_bytes"] for row in smaller)
    out = capsys.readouterr().out
    assert "| ours UniPELT (defaults) |" in out and "target" in out


def test_search_quality_smoke_reports_final_stage_searches_and_cost(tmp_path, tiny_bert_dir, synthetic_task_dir, capsys):
    import yaml

    recipe = {
        "model": str(tiny_bert_dir), "task": str(synthetic_task_dir), "seed": 0,
        "algorithm": {"name": "nsga2", "n_trials": 4, "pop_size": 2},
        "space": {"modules": ["serial_adapter", "parallel_adapter", "lora"],
                  "sizes": {"serial_adapter": [0, 2, 8], "parallel_adapter": [0, 2, 8], "lora": [0, 2]}},
        "training": {"batch_size": 8, "max_length": 16},
        "fidelity": {"levels": [{"train_subset": 16, "max_steps": 2}, {"train_subset": 32, "max_steps": 4}], "eta": 2},
        "final": {"train_subset": 32, "num_epochs": 1, "seeds": [0]},
        "baselines": ["lora_r8", "full_finetuning"],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    search_quality = load_script("search_quality")
    argv = ["--recipe", str(path), "--out", str(tmp_path / "out"), "--algorithms", "nsga2", "random", "--seeds", "0"]
    results = search_quality.main(argv)
    names = [row["name"] for row in results["final"]]
    assert names[-2:] == ["lora_r8", "full_finetuning"] and len(names) > 2
    assert all(row["test"] is not None and 0.0 <= row["test"] <= 1.0 for row in results["final"])
    assert results["final"][-1]["trainable_parameters"] == results["backbone_parameters"]
    assert any("full fine-tuning" in v or "lora_r8" in v for v in results["verdicts"])
    assert [s["algorithm"] for s in results["searches"]] == ["nsga2", "random"]
    for search in results["searches"]:
        # 4 trials x 2 steps + promoted x 4 steps, over the 4 steps of one final run (32 examples / batch 8)
        assert search["cost_final_runs"] == search["steps"] / 4 and search["steps"] >= 4 * 2
        journal = [json.loads(line) for line in
                   (tmp_path / "out" / f"{search['algorithm']}-s0" / "journal.jsonl").read_text().splitlines()[1:]]
        promoted = [t for t in journal if t["kind"] == "promotion" and t["status"] == "ok"]
        assert search["kendall"]["n"] == len(promoted) > 0  # every promoted point was measured at both levels
    # hypervolume against trials: one value per level-0 trial, never decreasing; the plot and the reach table
    for search in results["searches"]:
        curve = search["hv_curve"]
        assert len(curve) == 4 and all(b >= a for a, b in zip(curve, curve[1:])) and curve[-1] > 0
    curves = results["hv_curves"]
    assert curves["reference"] == "random" and curves["target_hv"] == results["searches"][1]["hv_curve"][-1]
    assert curves["trials_to_reach"]["random"] == search_quality.trials_to_reach(results["searches"][1]["hv_curve"], curves["target_hv"])
    assert search_quality.trials_to_reach([0.1, 0.2, 0.3], 0.25) == 3 and search_quality.trials_to_reach([0.1], 0.2) is None
    assert (tmp_path / "out" / "hv_vs_trials.png").read_bytes()[:4] == b"\x89PNG"
    assert "to reach random's mean final level-0 HV" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "random-s0" / "front.json").exists()
    assert not list((tmp_path / "out" / "random-s0").glob("front/*/adapter_model.safetensors"))
    assert "| nsga2 |" in (tmp_path / "out" / "results.md").read_text()
    before = len((tmp_path / "out" / "nsga2-s0" / "journal.jsonl").read_text().splitlines())
    search_quality.main(argv)  # resumed: nothing trained again
    assert len((tmp_path / "out" / "nsga2-s0" / "journal.jsonl").read_text().splitlines()) == before

    # --rank-all: every level-0 point measured at the last level too, beside the run (its journal untouched)
    ranked = search_quality.main(argv + ["--rank-all"])
    assert len((tmp_path / "out" / "nsga2-s0" / "journal.jsonl").read_text().splitlines()) == before
    level0 = [t for t in read_journal(tmp_path / "out" / "nsga2-s0" / "journal.jsonl") if t["level"] == 0 and t["status"] == "ok"]
    assert ranked["kendall_all"]["n"] == len({json.dumps(t["x"], sort_keys=True) for t in level0}) == 4
    assert ranked["searches"][0]["kendall"] == results["searches"][0]["kendall"]  # the run's own tau is unchanged
    assert ranked["kendall_all"]["from_loss"]["n"] == 4  # the loss is journaled for every trial
    ranking = read_journal(tmp_path / "out" / "nsga2-s0" / "ranking" / "journal.jsonl")
    assert len({t["trial_id"] for t in ranking}) == len(ranking)  # new trials get ids after the copied ones
    assert "every searched point of the first run" in (tmp_path / "out" / "results.md").read_text()

    # a front point that is a hand design is named, and never counts as matching that very baseline
    rows = [{"name": "p00", "kind": "search", "trainable_parameters": 10, "percent": 0.1, "test": 0.8, "test_se": 0.01,
             "same_as": "lora_r8"},
            {"name": "lora_r8", "kind": "baseline", "trainable_parameters": 10, "percent": 0.1, "test": 0.8, "test_se": 0.01}]
    assert search_quality.verdicts(rows) == ["lora_r8: no front point with <= 10 parameters other than its own configuration"]
    rows[0]["same_as"] = "serial_adapter"
    assert search_quality.verdicts(rows) == ["lora_r8 (0.8000, 10 params): matched by p00 = serial_adapter (0.8000, 10 params, diff +0.0000)"]
    # with final runs at common seeds, the verdict adds the seed-by-seed comparison (a paired t-test)
    rows[0].update(test=0.795, by_seed={0: 0.80, 1: 0.79, 2: 0.795})
    rows[1].update(by_seed={0: 0.81, 1: 0.80, 2: 0.79, 3: 0.80})
    from scipy.stats import ttest_rel

    p_value = ttest_rel([0.81, 0.80, 0.79], [0.80, 0.79, 0.795]).pvalue
    assert search_quality.verdicts(rows) == [
        "lora_r8 (0.8000, 10 params): matched by p00 = serial_adapter (0.7950, 10 params, diff -0.0050); seed by seed "
        f"(0, 1, 2): lora_r8 ahead on 2 of 3, paired t p = {p_value:.3f}"]
    rows[0]["by_seed"] = {3: 0.80}   # one common seed: nothing to pair
    assert search_quality.verdicts(rows)[0].endswith("diff -0.0050)")
    # a rival (a configuration another search found, trained as a baseline) stands with the front and is not judged;
    # full fine-tuning's verdict is paired by seed too
    rival = {"name": "found", "kind": "baseline", "trainable_parameters": 8, "percent": 0.08, "test": 0.805,
             "test_se": 0.01, "by_seed": {0: 0.80, 1: 0.81}}
    full = {"name": "full_finetuning", "kind": "baseline", "trainable_parameters": 1000, "percent": 100.0, "test": 0.81,
            "test_se": 0.011, "by_seed": {0: 0.81, 1: 0.81}}
    p_full = ttest_rel([0.81, 0.81], [0.80, 0.81]).pvalue
    assert search_quality.verdicts(rows + [rival, full], rivals=("found",)) == [
        "best point <= 0.5 % (found (rival), 0.080 %): test 0.8050 vs full fine-tuning 0.8100 (gap +0.0050, one SE "
        f"0.0110): within one SE; seed by seed (0, 1): full_finetuning ahead on 1 of 2, paired t p = {p_full:.3f}",
        "lora_r8 (0.8000, 10 params): beaten by found (rival) (0.8050, 8 params, diff +0.0050); seed by seed (0, 1): "
        f"lora_r8 ahead on 1 of 2, paired t p = {ttest_rel([0.81, 0.80], [0.80, 0.81]).pvalue:.3f}"]
    assert search_quality.verdicts(rows + [rival])[-1] == "found: no front point with <= 8 parameters"  # judged
    # the rivals as a front: hypervolume on the report split at the seeds every front point and rival has
    rows[0]["by_seed"] = {0: 0.80, 1: 0.79, 2: 0.795}
    other = {**rival, "name": "found_big", "trainable_parameters": 100, "by_seed": {0: 0.82, 1: 0.83, 5: 0.8}}
    hv = search_quality.report_hv_by_seed(rows + [rival, other], ("found", "found_big"), backbone=1000)
    assert hv["seeds"] == [0, 1] and hv["front_points"] == ["p00"] and hv["rival_points"] == ["found", "found_big"]
    assert hv["front"] == [search_quality.normalised_hv([(0.80, 10)], 1000),
                           search_quality.normalised_hv([(0.79, 10)], 1000)]
    assert hv["rivals"][1] == search_quality.normalised_hv([(0.81, 8), (0.83, 100)], 1000)
    assert hv["front_ahead"] == 0 and 0.0 <= hv["paired_p"] <= 1.0
    assert search_quality.report_hv_by_seed(rows + [rival], (), backbone=1000) is None   # no rivals, no comparison
    with pytest.raises(SystemExit, match=r"--rivals: \['nowhere'\] not among the recipe's `baselines`"):
        search_quality.main(argv + ["--rivals", "nowhere"])

    # a variant: another run of an algorithm with some `algorithm.*` fields set, reported under its own label
    varied = search_quality.main(argv + ["--variant", "nsga2_one_generation", "nsga2", "pop_size=4"])
    assert [s["algorithm"] for s in varied["searches"]] == ["nsga2", "random", "nsga2_one_generation"]
    header = json.loads((tmp_path / "out" / "nsga2_one_generation-s0" / "journal.jsonl").read_text().splitlines()[0])
    assert header["recipe"]["algorithm"] == {"name": "nsga2", "n_trials": 4, "pop_size": 4}
    assert set(varied["hv_curves"]["curves"]) == {"nsga2", "random", "nsga2_one_generation"}
    with pytest.raises(SystemExit, match="--variant needs LABEL ALGORITHM"):
        search_quality.main(argv + ["--variant", "lonely"])

    # a second seed of LoRA only (final.max_parameters 1 keeps every front point out), then the pooled report
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({**recipe, "final": {**recipe["final"], "seeds": [0, 1], "max_parameters": 1},
                                     "baselines": ["lora_r8"]}))
    search_quality.main(["--recipe", str(extra), "--out", str(tmp_path / "out")])
    pooled = {row["name"]: row for row in search_quality.main(argv + ["--pool-final-runs"])["final"]}
    assert pooled["lora_r8"]["seeds"] == [0, 1] and pooled["full_finetuning"]["seeds"] == [0]
    assert all(pooled[row["name"]]["seeds"] == [0] for row in results["final"] if row["kind"] == "search")


def test_lr_sweep_smoke_writes_one_row_per_block_and_rate(tmp_path, tiny_bert_dir, synthetic_task_dir, capsys):
    lr_sweep = load_script("lr_sweep")
    out = tmp_path / "sweep.jsonl"
    argv = ["--model", str(tiny_bert_dir), "--task", str(synthetic_task_dir), "--blocks", "lora", "parallel_adapter",
            "--rates", "1e-3", "1e-2", "--train-subset", "16", "--max-steps", "1", "--out", str(out)]
    rows = lr_sweep.main(argv)
    assert sorted((r["block"], r["learning_rate"]) for r in rows) == [
        ("lora", 1e-3), ("lora", 1e-2), ("parallel_adapter", 1e-3), ("parallel_adapter", 1e-2)]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["trainable_parameters"] > 0 for r in rows)
    assert "| lora |" in capsys.readouterr().out
    assert len(lr_sweep.main(argv)) == 4  # resumed from the file: nothing trained twice
    assert len(out.read_text().splitlines()) == 4


def test_lr_sweep_at_another_size_with_the_head_at_its_default_rate(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                                                     capsys):
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from peft_autoconfig import MixedPetConfig

    lr_sweep = load_script("lr_sweep")
    out = tmp_path / "sweep.jsonl"
    argv = ["--model", str(tiny_bert_dir), "--task", str(synthetic_task_dir), "--blocks", "parallel_adapter",
            "--rates", "2e-3", "--size", "6", "--head-rate", "default", "--train-subset", "16", "--max-steps", "1",
            "--out", str(out)]
    (row,) = lr_sweep.main(argv)
    alone = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir),
                           MixedPetConfig(task_type="SEQ_CLS", parallel_adapter_size=6))
    blocks = sum(p.numel() for n, p in alone.named_parameters() if p.requires_grad and "parallel" in n)
    assert blocks > 0 and row["trainable_parameters"] == blocks   # the block at size 6, nothing else
    assert (row["size"], row["head_rate"], row["learning_rate"]) == (6, "default", 2e-3)
    assert 0.0 <= row["accuracy"] <= 1.0 and row["train_loss"] > 0
    assert "| parallel_adapter 6 (head at default) |" in capsys.readouterr().out
    assert len(lr_sweep.main(argv)) == 1 and len(out.read_text().splitlines()) == 1   # resumed, nothing re-trained


def test_unipelt_prefix_lr_smoke_prints_one_row_per_variant(tiny_bert_dir, synthetic_task_dir, capsys):
    script = load_script("unipelt_prefix_lr")
    rows = script.main(["--model", str(tiny_bert_dir), "--task", str(synthetic_task_dir), "--train-subset", "16",
                        "--max-steps", "1", "--eval-subset", "16"])
    assert [r["variant"] for r in rows] == list(script.VARIANTS)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert capsys.readouterr().out.count('"variant"') == 3


def test_search_quality_first_level_only_compares_level0_hypervolume(tmp_path, tiny_bert_dir, synthetic_task_dir):
    import yaml

    recipe = {
        "model": str(tiny_bert_dir), "task": str(synthetic_task_dir), "seed": 0,
        "algorithm": {"name": "nsga2", "n_trials": 3, "pop_size": 2},
        "space": {"modules": ["serial_adapter", "lora"], "sizes": {"serial_adapter": [0, 2, 8], "lora": [0, 2]}},
        "training": {"batch_size": 8, "max_length": 16},
        "fidelity": {"levels": [{"train_subset": 16, "max_steps": 1}, {"train_subset": 32, "max_steps": 2}], "eta": 2},
        "final": {"train_subset": 32, "num_epochs": 1, "seeds": [0]},
        "baselines": [],
    }
    search_quality = load_script("search_quality")
    runs = search_quality.run_recipes(recipe, ["nsga2", "random"], [0, 1], first_level_only=True)
    assert [len(r["fidelity"]["levels"]) for _, _, r in runs] == [2, 1, 1, 1]  # the first run keeps its promotion
    assert "final" in runs[0][2] and all("final" not in r for _, _, r in runs[1:])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    results = search_quality.main(["--recipe", str(path), "--out", str(tmp_path / "out"), "--algorithms", "nsga2",
                                   "random", "--seeds", "0", "1", "--first-level-only"])
    for search in results["searches"][1:]:
        levels = {t["level"] for t in read_journal(tmp_path / "out" / f"{search['algorithm']}-s{search['seed']}" / "journal.jsonl")}
        assert levels == {0}
    assert all(s["hv_level0"] == s["hv_curve"][-1] for s in results["searches"])
    # only the level-0 HV is compared: the first run's front is a level-1 front, the others' are level-0 fronts
    assert set(results["hv_test"]) == {"hv_level0"}
    by_algorithm = {s["algorithm"]: s for s in results["summary"]}
    nsga2 = [s["hv_level0"] for s in results["searches"] if s["algorithm"] == "nsga2"]
    assert by_algorithm["nsga2"]["hv0_mean"] == pytest.approx(sum(nsga2) / 2)
    report = (tmp_path / "out" / "results.md").read_text()
    assert "nsga2 vs random, level-0 HV: Welch's t = " in report and "compare the level-0 HV" in report


def test_hv_tests_need_two_runs_of_each_algorithm():
    search_quality = load_script("search_quality")
    searches = [{"algorithm": a, "hv_level0": v} for a, v in
                [("nsga2", 0.30), ("nsga2", 0.31), ("nsga2", 0.32), ("random", 0.20), ("random", 0.21), ("random", 0.22)]]
    tests = search_quality.hv_tests(searches, ["nsga2", "random"], ["hv_level0"])
    assert tests["hv_level0"]["welch_t"] > 0 and tests["hv_level0"]["p_value"] < 0.01
    assert tests["hv_level0"]["mann_whitney_u"] == 9.0  # every nsga2 value above every random one
    assert search_quality.hv_tests(searches[:4], ["nsga2", "random"], ["hv_level0"]) is None
    assert search_quality.hv_tests(searches, ["nsga2"], ["hv_level0"]) is None
