"""SIGKILL a running search, resume it: no finished trial runs twice; the journal ends with every trial once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_search_fakes import write_recipe

from peft_autoconfig.cli import main
from peft_autoconfig.search import read_journal

TESTS = Path(__file__).parent


def finished_keys(journal: Path) -> list[str]:
    keys = []
    for line in journal.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "trial":
            keys.append(record["key"])
    return keys


@pytest.mark.parametrize("algorithm", ["nsga2", "mobo"])
def test_sigkill_and_resume(algorithm, tmp_path, tiny_bert_dir, synthetic_task_dir, monkeypatch, capsys):
    """Killed after 5 finished trials, i.e. inside the second batch of 4: `mobo` (issue 14) and NSGA-II alike."""
    if algorithm == "mobo":
        pytest.importorskip("botorch")
    recipe = write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:logged_slow_evaluate",
                          algorithm={"name": algorithm, "n_trials": 12, "pop_size": 4})
    expected_trials = 12 + 6  # search + promotion of ceil(12 / 2)
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "SEARCH_CALL_LOG": str(calls), "SEARCH_FAKE_SLEEP": "0.25"}
    process = subprocess.Popen(
        [sys.executable, "-m", "peft_autoconfig.cli", "search", str(recipe), "--out", str(out), "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(finished_keys(journal)) >= 5:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the search finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = finished_keys(journal)
    assert 5 <= len(done_before) < expected_trials
    with open(journal, "a") as handle:  # as if the kill had landed in the middle of a write
        handle.write('{"type": "trial", "trial_id": 99, "key": "torn')
    calls_before = calls.read_text().splitlines()

    monkeypatch.setenv("SEARCH_CALL_LOG", str(calls))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    with pytest.warns(UserWarning, match="last record is incomplete"):
        assert main(["search", str(recipe), "--out", str(out), "--no-progress"]) == 0
    resumed_calls = calls.read_text().splitlines()[len(calls_before):]
    assert not set(resumed_calls) & set(done_before), "a finished trial was evaluated again"
    assert len(resumed_calls) == len(set(resumed_calls)) == expected_trials - len(done_before)
    assert f"({len(resumed_calls)} evaluated now, {len(done_before)} resumed)" in capsys.readouterr().out

    final = read_journal(journal)
    keys = [t["key"] for t in final]
    assert len(keys) == len(set(keys)) == expected_trials
    assert [t["trial_id"] for t in final] == list(range(expected_trials))

    # the resumed search is the search that would have run without the kill
    monkeypatch.setenv("SEARCH_CALL_LOG", str(tmp_path / "calls-reference.log"))
    assert main(["search", str(recipe), "--out", str(tmp_path / "reference"), "--no-progress"]) == 0
    reference = read_journal(tmp_path / "reference" / "journal.jsonl")
    assert [(t["trial_id"], t["key"], t["F"]) for t in reference] == [(t["trial_id"], t["key"], t["F"]) for t in final]
    assert json.loads((out / "front.json").read_text())["points"] == json.loads((tmp_path / "reference" / "front.json").read_text())["points"]


def test_a_later_recipe_into_the_same_folder_keeps_trial_ids_unique(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """A second recipe with the same search part (here: another final seed, fewer baselines) adds final runs after
    trials it never requests (the first recipe's baselines): every id in the journal stays unique."""
    from peft_autoconfig.search import load_recipe, run_search

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    common = dict(evaluator="test_search_fakes:fake_evaluate", algorithm={"name": "nsga2", "n_trials": 4, "pop_size": 2},
                  evaluation={"eval_subset": 32, "report_split": "test"})
    first = write_recipe(tmp_path / "a", tiny_bert_dir, synthetic_task_dir, **common,
                         final={"train_subset": 128, "num_epochs": 1, "seeds": [0]},
                         baselines=[{"name": "lora_r2", "config": {"lora_rank": 2}}, {"name": "lora_r4", "config": {"lora_rank": 4}}])
    second = write_recipe(tmp_path / "b", tiny_bert_dir, synthetic_task_dir, **common,
                          final={"train_subset": 128, "num_epochs": 1, "seeds": [0, 1]}, baselines=[])
    out = tmp_path / "out"
    run_search(load_recipe(first), out, progress=False)

    before = read_journal(out / "journal.jsonl")
    result = run_search(load_recipe(second), out, progress=False)
    after = read_journal(out / "journal.jsonl")
    assert result.n_evaluated > 0 and len(after) == len(before) + result.n_evaluated
    ids = [t["trial_id"] for t in after]
    assert len(set(ids)) == len(ids)
    new = [t for t in after if t["key"] not in {b["key"] for b in before}]
    assert all(t["seed"] == 1 and t["trial_id"] > max(b["trial_id"] for b in before) for t in new)
