"""The protocol around the search: honest splits with standard errors, the final stage (journaled, resumable, and
re-run alone when only `final:` changes), named baselines, and `--retry-failed`."""

from __future__ import annotations

import yaml
import pytest
from test_search_fakes import write_recipe

from peft_autoconfig.cli import main
from peft_autoconfig.search import JournalMismatchError, load_recipe, read_journal, run_search


def calls(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_final_stage_reuses_the_search_when_only_final_changes(tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(log))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    path = write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:logged_slow_evaluate",
        evaluation={"selection_split": "validation", "report_split": "test", "eval_subset": 32},
        final={"train_subset": 128, "num_epochs": 1, "seeds": [0, 1]},
        baselines=["lora_r8", "full_finetuning"],
    )
    out = tmp_path / "out"
    result = run_search(load_recipe(path), out, progress=False)
    search_calls = [k for k in calls(log) if not k.startswith("final:")]
    n_front = len(result.front)
    assert len(search_calls) == 8 + 4  # search, promotion; with a final stage the baselines train only there
    assert len(calls(log)) - len(search_calls) == (n_front + 2) * 2  # every front point and baseline, per seed

    finals = [t for t in read_journal(out / "journal.jsonl") if t["kind"] == "final"]
    assert {t["eval_split"] for t in finals} == {"test"} and {t["seed"] for t in finals} == {0, 1}
    assert {t["fidelity"]["train_subset"] for t in finals} == {128} and all(t["level"] == -1 for t in finals)
    full = [t for t in finals if t["name"] == "full_finetuning"]
    assert len(full) == 2 and all(t["config"] is None for t in full)
    for point in result.front:
        assert point["selection"]["split"] == "validation" and point["selection"]["n"] == 200
        assert point["selection"]["standard_error"] == pytest.approx(
            (point["metric"] * (1 - point["metric"]) / 200) ** 0.5)
        report = point["report"]
        runs = sorted((t for t in finals if t["name"] == f"trial:{point['trial_id']}"), key=lambda t: t["seed"])
        assert report["split"] == "test" and report["seeds"] == [t["metric"] for t in runs] and report["n"] == 200
        assert len(runs) == 2 and report["mean"] == pytest.approx(sum(report["seeds"]) / 2)  # one value per seed
        assert set(report) == {"split", "metric", "mean", "sd", "standard_error", "n", "seeds"}
    assert {b["name"] for b in result.document["baselines"]} == {"lora_r8", "full_finetuning"}
    search = result.document["search"]   # the cost in the unit: the final-budget LoRA r=8 baseline's time
    lora_times = [t["wall_time_s"] for t in finals if t["name"] == "lora_r8"]
    assert search["cost_lora_r8_runs"] == pytest.approx(search["trials_time_s"] / (sum(lora_times) / 2))
    from peft_autoconfig.commands.show import format_front

    assert f"= {search['cost_lora_r8_runs']:.1f} final-budget LoRA r=8 runs)" in format_front(result.document, out)
    for baseline in result.document["baselines"]:
        assert baseline["selection"] is None and baseline["report"]["split"] == "test"
        runs = sorted((t for t in finals if t["name"] == baseline["name"]), key=lambda t: t["seed"])
        assert baseline["report"]["seeds"] == [t["metric"] for t in runs] and len(runs) == 2

    # more seeds: only the new seed's final runs; no search trial again, same --out
    data = yaml.safe_load(path.read_text())
    data["final"]["seeds"] = [0, 1, 2]
    path.write_text(yaml.safe_dump(data))
    before = len(calls(log))
    again = run_search(load_recipe(path), out, progress=False)
    new = calls(log)[before:]
    assert len(new) == n_front + 2 and all(k.startswith("final:") and k.endswith("seed=2") for k in new)
    assert [len(p["report"]["seeds"]) for p in again.front] == [3] * n_front

    # a change to the search part is refused, not mixed in
    data["algorithm"]["n_trials"] = 9
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(JournalMismatchError, match="different recipe"):
        run_search(load_recipe(path), out, progress=False)


def test_retry_failed_reruns_failed_trials_only_when_asked(tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch, capsys):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(log))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    monkeypatch.setenv("SEARCH_FLAKY_MARK", str(tmp_path / "failed-once"))
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:flaky_evaluate")
    out = tmp_path / "out"
    assert main(["search", str(path), "--out", str(out), "--no-progress"]) == 0
    failed = [t for t in read_journal(out / "journal.jsonl") if t["status"] == "failed"]
    assert len(failed) == 1 and "simulated transient failure" in failed[0]["error"]

    before = len(calls(log))
    assert main(["search", str(path), "--out", str(out), "--no-progress"]) == 0  # plain resume: the failure is kept
    assert len(calls(log)) == before
    assert [t["key"] for t in read_journal(out / "journal.jsonl") if t["status"] == "failed"] == [failed[0]["key"]]

    assert main(["search", str(path), "--out", str(out), "--no-progress", "--retry-failed"]) == 0
    assert failed[0]["key"] in calls(log)[before:]
    trials = read_journal(out / "journal.jsonl")
    retried = next(t for t in trials if t["key"] == failed[0]["key"])
    assert retried["status"] == "ok" and retried["trial_id"] == failed[0]["trial_id"]
    assert not [t for t in trials if t["status"] == "failed"]
    capsys.readouterr()


def test_final_max_parameters_retrains_only_small_points_seed_major(tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(log))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    common = dict(evaluator="test_search_fakes:logged_slow_evaluate", baselines=["lora_r8"],
                  evaluation={"selection_split": "validation", "report_split": "test", "eval_subset": 32})
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **common,
                        final={"train_subset": 128, "num_epochs": 1, "seeds": [0, 1]})
    everything = run_search(load_recipe(path), tmp_path / "all", progress=False)
    sizes = sorted(p["trainable_parameters"] for p in everything.front)
    assert len(sizes) >= 2 and sizes[0] < sizes[-1]
    limit = sizes[0]

    log.unlink()
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **common,
                        final={"train_subset": 128, "num_epochs": 1, "seeds": [0, 1], "max_parameters": limit})
    result = run_search(load_recipe(path), tmp_path / "limited", progress=False)
    finals = [k for k in calls(log) if k.startswith("final:")]
    n_small = sum(p["trainable_parameters"] <= limit for p in result.front)
    assert len(finals) == (n_small + 1) * 2  # the small points and the baseline, per seed
    assert [k.endswith("seed=0") for k in finals] == [True] * (n_small + 1) + [False] * (n_small + 1)  # seed-major
    for point in result.front:
        assert (point["report"] is not None) == (point["trainable_parameters"] <= limit)

    with pytest.raises(Exception, match=r"final.max_parameters`: .*percentage of the backbone like '0.5%'"):
        load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **common,
                                 final={"train_subset": 128, "max_parameters": "half"}))


def test_journal_written_before_new_config_fields_still_answers(tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch):
    """Baseline and final runs are keyed by the config; a version that adds config fields (BitFit's `bias_tuning`,
    `bias_targets`, `weight_masks`) must still find runs keyed by the older, shorter config dicts."""
    import json

    from peft_autoconfig.front import config_identity

    log = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(log))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:logged_slow_evaluate",
                        evaluation={"selection_split": "validation", "report_split": "test", "eval_subset": 32},
                        final={"train_subset": 128, "num_epochs": 1, "seeds": [0]}, baselines=["lora_r8", "full_finetuning"])
    out = tmp_path / "out"
    run_search(load_recipe(path), out, progress=False)
    new_fields = ("bias_tuning", "bias_targets", "weight_masks")
    lines = (out / "journal.jsonl").read_text().splitlines()
    rewritten, n_old = [lines[0]], 0
    for line in lines[1:]:
        record = json.loads(line)
        if record["config"] is not None and record["x"] is None:  # keyed by the config: write it as an older version did
            identity = config_identity(record["config"])
            old = {k: v for k, v in record["config"].items() if k not in new_fields}
            record["config"] = old
            record["key"] = record["key"].replace(identity, json.dumps(old, sort_keys=True, separators=(",", ":")))
            n_old += 1
        rewritten.append(json.dumps(record))
    (out / "journal.jsonl").write_text("\n".join(rewritten) + "\n")
    assert n_old >= 2  # lora_r8's final run and at least one front point's

    log.unlink()
    result = run_search(load_recipe(path), out, progress=False)
    assert calls(log) == []  # nothing trained again
    assert all(point["report"] is not None for point in result.front)
    lora = {"peft_type": "MIXED_PET", "task_type": "SEQ_CLS", "lora_rank": 8}
    assert config_identity(lora) == config_identity({**lora, "bias_tuning": 0, "peft_version": "9.9"})
    assert config_identity(lora) != config_identity({**lora, "lora_rank": 4})


def test_final_stage_trains_configs_of_the_same_function_once(tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch):
    """A config written with fields that change nothing (the placement of an absent serial adapter, alpha = rank,
    the default LoRA targets spelt out) is the same run as its twin: trained once per seed, the twin's record a copy
    that says so (`same_run_as`, no wall time); a genuinely different one (alpha 16) still trains."""
    from peft_autoconfig.front import functional_identity

    twin = {"lora_rank": 8, "target_modules": ["value", "query"], "serial_adapter_placement": "pfeiffer",
            "prefix_init_std": 0.5}
    assert functional_identity({"peft_type": "MIXED_PET", "lora_rank": 8, "lora_alpha": 8.0}, ["query", "value"]) == \
        functional_identity({"peft_type": "MIXED_PET", **twin}, ["query", "value"])
    assert functional_identity({"peft_type": "MIXED_PET", "lora_rank": 8, "lora_alpha": 16.0}, ["query", "value"]) != \
        functional_identity({"peft_type": "MIXED_PET", "lora_rank": 8}, ["query", "value"])
    assert functional_identity({"peft_type": "MIXED_PET", "prefix_length": 2, "layers_to_transform": [0, 1]}, None, 2) \
        == functional_identity({"peft_type": "MIXED_PET", "prefix_length": 2}, None, 2)
    assert functional_identity({"peft_type": "MIXED_PET", "prefix_length": 2, "prefix_init_std": 0.5}) != \
        functional_identity({"peft_type": "MIXED_PET", "prefix_length": 2})   # a present block keeps its fields
    # with the number of layers, sizes read as the layers get them: a block sized only in unselected layers is absent
    # (its fields dropped), a per-layer size equals one int in the selected layers, all layers equal None
    mixed = {"peft_type": "MIXED_PET"}
    assert functional_identity({**mixed, "lora_rank": {0: 8, 3: 8}, "serial_adapter_size": {2: 16},
                                "serial_adapter_placement": "pfeiffer", "layers_to_transform": [0, 1]}, None, 4) == \
        functional_identity({**mixed, "lora_rank": 8, "layers_to_transform": [0]}, None, 4) == \
        functional_identity({**mixed, "lora_rank": {0: 8}}, None, 4)
    assert functional_identity({**mixed, "lora_rank": {"0": 8, "1": 8}}, None, 2) == \
        functional_identity({**mixed, "lora_rank": 8}, None, 2)
    assert functional_identity({**mixed, "lora_rank": 8, "layers_to_transform": [0]}, None, 4) != \
        functional_identity({**mixed, "lora_rank": 8, "layers_to_transform": [1]}, None, 4)
    assert functional_identity({**mixed, "lora_rank": {0: 8, 1: 4}}, None, 2) != \
        functional_identity({**mixed, "lora_rank": {0: 4, 1: 8}}, None, 2)

    log = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(log))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    common = dict(evaluator="test_search_fakes:logged_slow_evaluate",
                  evaluation={"selection_split": "validation", "report_split": "test", "eval_subset": 32},
                  final={"train_subset": 128, "num_epochs": 1, "seeds": [0, 1], "max_parameters": 1})
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **common, baselines=[
        "lora_r8", {"name": "twin", "config": twin}, {"name": "alpha16", "config": {"lora_rank": 8, "lora_alpha": 16.0}}])
    out = tmp_path / "out"
    result = run_search(load_recipe(path), out, progress=False)
    finals = [k for k in calls(log) if k.startswith("final:")]
    assert len(finals) == 2 * 2   # lora_r8 and alpha16 per seed; the twin shares lora_r8's runs
    trials = {(t["name"], t["seed"]): t for t in read_journal(out / "journal.jsonl") if t["kind"] == "final"}
    for seed in (0, 1):
        source, copy = trials[("lora_r8", seed)], trials[("twin", seed)]
        assert copy["same_run_as"] == source["trial_id"] and copy["metric"] == source["metric"]
        assert copy["wall_time_s"] == 0.0 and copy["config"]["serial_adapter_placement"] == "pfeiffer"
        assert source["same_run_as"] is None and trials[("alpha16", seed)]["same_run_as"] is None
    reports = {b["name"]: b["report"]["seeds"] for b in result.document["baselines"]}
    assert reports["twin"] == reports["lora_r8"]

    # a later recipe's twin is answered from the journal: nothing trains
    before = len(calls(log))
    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **common, baselines=[
        "lora_r8", {"name": "twin", "config": twin}, {"name": "alpha16", "config": {"lora_rank": 8, "lora_alpha": 16.0}},
        {"name": "spelt_out", "config": {"lora_rank": 8, "target_modules": ["query", "value"]}}])
    run_search(load_recipe(path), out, progress=False)
    assert calls(log)[before:] == []
    later = [t for t in read_journal(out / "journal.jsonl") if t["name"] == "spelt_out"]
    assert sorted(t["same_run_as"] for t in later) == sorted(trials[("lora_r8", s)]["trial_id"] for s in (0, 1))
