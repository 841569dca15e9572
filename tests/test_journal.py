"""The trial journal: durable appends, reload, torn last line, refusal to mix recipes."""

from __future__ import annotations

import json

import pytest

from peft_autoconfig.search.journal import Journal, JournalMismatchError, read_journal


def record(i: int) -> dict:
    return {"trial_id": i, "key": f"k{i}", "status": "ok", "F": [-0.5 - i / 10, 100.0 + i], "x": {"a": i}}


def test_append_and_reload(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, "abc", recipe={"seed": 0})
    for i in range(3):
        journal.add(record(i))
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["type"] == "header"
    reloaded = Journal(path, "abc")
    assert len(reloaded) == 3 and "k2" in reloaded
    assert reloaded.get("k1")["F"] == [-0.6, 101.0]  # floats come back exactly
    assert [r["trial_id"] for r in reloaded] == [0, 1, 2]
    with pytest.raises(ValueError, match="already in the journal"):
        reloaded.add(record(1))


def test_torn_last_line_is_skipped_and_cut(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, "abc")
    journal.add(record(0))
    journal.add(record(1))
    with open(path, "a") as handle:  # a process killed in the middle of a write
        handle.write(json.dumps({"type": "trial", **record(2)})[:25])
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
