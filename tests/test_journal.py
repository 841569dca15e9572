"""The trial journal: typed versioned records, durable appends, reload, torn last line, refusal to mix recipes or
formats, and the retry rule (a later record replaces an earlier failed one)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from peft_autoconfig.search.journal import Journal, JournalMismatchError, read_journal
from peft_autoconfig.search.trial import TRIAL_FORMAT_VERSION, RunningFront, TrialRecord, TrialRequest, build_record


def record(i: int, status: str = "ok") -> TrialRecord:
    return TrialRecord(
        trial_id=i, key=f"k{i}", kind="search", name=None, x={"a": i}, config={"peft_type": "MIXED_PET"}, level=0,
        fidelity={}, seed=0, status=status, error=None if status == "ok" else "boom", metric_name="accuracy",
        metric=0.5 + i / 10, eval_split="validation", n_eval=100, standard_error=0.05, trainable_parameters=100 + i,
        objectives=None, F=[-0.5 - i / 10, 100.0 + i], wall_time_s=1.0,
    )


def test_append_and_reload(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, "abc", recipe={"seed": 0})
    for i in range(3):
        journal.add(record(i))
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["type"] == "header"
    assert json.loads(lines[1])["version"] == TRIAL_FORMAT_VERSION == json.loads(lines[0])["format_version"]
    reloaded = Journal(path, "abc")
    assert len(reloaded) == 3 and "k2" in reloaded
    assert isinstance(reloaded.get("k1"), TrialRecord)
    assert reloaded.get("k1").F == [-0.6, 101.0]  # floats come back exactly
    assert dataclasses.replace(reloaded.get("k1"), finished_at="") == record(1)
    assert [r.trial_id for r in reloaded] == [0, 1, 2]
    with pytest.raises(ValueError, match="already in the journal"):
        reloaded.add(record(1))


def test_torn_last_line_is_skipped_and_cut(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, "abc")
    journal.add(record(0))
    journal.add(record(1))
    with open(path, "a") as handle:  # a process killed in the middle of a write
        handle.write(json.dumps({"type": "trial", **record(2).to_dict()})[:25])
    with pytest.warns(UserWarning, match="incomplete"):
        resumed = Journal(path, "abc")
    assert len(resumed) == 2 and "k2" not in resumed
    resumed.add(record(2))
    assert [r["trial_id"] for r in read_journal(path)] == [0, 1, 2]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # every line is whole again


def test_other_recipe_is_refused(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, "abc").add(record(0))
    with pytest.raises(JournalMismatchError, match="different recipe"):
        Journal(path, "xyz")


def test_wave1_and_foreign_journals_are_refused_naming_the_versions(tmp_path):
    wave1 = tmp_path / "wave1.jsonl"
    wave1.write_text(
        json.dumps({"type": "header", "format_version": 1, "fingerprint": "abc", "recipe": {}}) + "\n"
        + json.dumps({"type": "trial", "trial_id": 0, "key": "k0", "status": "ok", "F": [0.0, 1.0]}) + "\n"
    )
    with pytest.raises(JournalMismatchError, match=rf"format version 1; .* reads version {TRIAL_FORMAT_VERSION}"):
        Journal(wave1, "abc")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"event": "something else"}) + "\n")
    with pytest.raises(JournalMismatchError, match="no header line"):
        Journal(foreign, "abc")
    mixed = tmp_path / "mixed.jsonl"  # a current header with an unversioned (wave-1) record in it
    mixed.write_text(
        json.dumps({"type": "header", "format_version": TRIAL_FORMAT_VERSION, "fingerprint": "abc"}) + "\n"
        + json.dumps({"type": "trial", "trial_id": 0, "key": "k0", "status": "ok"}) + "\n"
    )
    with pytest.raises(JournalMismatchError, match=rf"mixed.jsonl:2: trial record format version 1 found; this version reads {TRIAL_FORMAT_VERSION}"):
        Journal(mixed, "abc")


def test_a_retry_replaces_a_failed_record_only(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, "abc")
    journal.add(record(0, status="failed"))
    journal.add(record(0))  # the retry
    with pytest.raises(ValueError, match="already in the journal"):
        journal.add(record(0, status="failed"))
    reloaded = Journal(path, "abc")
    assert reloaded.get("k0").ok and len(read_journal(path)) == 1 and read_journal(path)[0]["status"] == "ok"


def test_build_record_standard_error_and_failure():
    request = TrialRequest(trial_id=3, key="k", kind="search", name=None, x={"a": 1}, config={}, level=0, fidelity={},
                           model="m", task="t", training={}, eval_split="validation", eval_subset=None, seed=0)
    ok = build_record(request, {"status": "ok", "metric": 0.8, "metric_name": "accuracy", "eval_examples": 400,
                                "wall_time_s": 2.0}, objectives=["metric", "trainable_parameters"],
                      analytic_parameters=50, metric_name="metric")
    assert ok.F == [-0.8, 50.0] and ok.n_eval == 400 and ok.standard_error == pytest.approx(0.02)
    assert ok.objectives == {"accuracy": 0.8, "trainable_parameters": 50}
    missing = build_record(request, {"status": "ok", "metric": 0.8}, objectives=["metric", "peak_memory_bytes"],
                           analytic_parameters=50, metric_name="accuracy")
    assert not missing.ok and "did not report ['peak_memory_bytes']" in missing.error


def test_running_front_keeps_only_the_non_dominated_points():
    front = RunningFront(2)
    assert front.add([-0.5, 10]) and front.add([-0.7, 20])
    assert not front.add([-0.4, 15])  # dominated by the first
    assert front.add([-0.8, 5])  # dominates both
    assert front.points == [[-0.8, 5.0]] and front.worst == [-0.4, 20.0]


def test_resume_under_changed_default_learning_rates_is_refused(tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch):
    """`learning_rates: {}` leaves the rates to the package defaults, which the fingerprint cannot see: the header
    records the resolved rates and a resume under other defaults is refused, naming what changed."""
    from test_search_fakes import write_recipe

    from peft_autoconfig.search import load_recipe, run_search
    from peft_autoconfig.training import optim

    path = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate",
                        training={"batch_size": 8, "max_length": 16, "learning_rates": {}},
                        algorithm={"name": "random", "n_trials": 2, "pop_size": 2})
    run_search(load_recipe(path), tmp_path / "out", progress=False)
    header = json.loads((tmp_path / "out" / "journal.jsonl").read_text().splitlines()[0])
    assert header["learning_rates"] == optim.DEFAULT_LEARNING_RATES
    run_search(load_recipe(path), tmp_path / "out", progress=False)  # same defaults: resumes

    monkeypatch.setitem(optim.DEFAULT_LEARNING_RATES, "lora", 5e-4)
    with pytest.raises(JournalMismatchError, match=r"other per-block learning rates \(lora: 0.003 -> 0.0005"):
        run_search(load_recipe(path), tmp_path / "out", progress=False)


def test_a_journal_resumes_only_under_its_adapter_width_rule(tiny_bert_dir, synthetic_task_dir, tmp_path):
    from test_search_fakes import write_recipe

    from peft_autoconfig.search import load_recipe, run_search

    def recipe(scaling):
        training = {"batch_size": 8, "max_length": 16, **({} if scaling is None else {"adapter_width_scaling": scaling})}
        return load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                        evaluator="test_search_fakes:fake_evaluate", training=training,
                                        algorithm={"name": "random", "n_trials": 2, "pop_size": 2}))

    out = tmp_path / "out"
    run_search(recipe(None), out, progress=False)
    lines = (out / "journal.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["adapter_width_scaling"] is True  # the default, recorded
    assert recipe(False).fingerprint() == recipe(True).fingerprint()  # checked by the header, not the fingerprint
    with pytest.raises(JournalMismatchError, match="adapter_width_scaling: true`, this recipe has false"):
        run_search(recipe(False), out, progress=False)
    # a journal of an earlier version (no record): resumes, with a warning that names the field
    header = json.loads(lines[0])
    del header["adapter_width_scaling"]
    (out / "journal.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.warns(UserWarning, match="training.adapter_width_scaling: false"):
        run_search(recipe(None), out, progress=False)
    run_search(recipe(False), out, progress=False)  # pinned to the old protocol: no warning needed
