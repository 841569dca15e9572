"""Dask evaluation: a 2-worker LocalCluster asks and records exactly the trials of a sequential run (same seed)."""

from __future__ import annotations

import pytest
from test_search_fakes import write_recipe

from peft_autoconfig.search import load_recipe, read_journal, run_search


def trial_table(out) -> list[tuple]:
    return [(t["trial_id"], t["kind"], t["key"], t["status"], t["F"]) for t in read_journal(out / "journal.jsonl")]


def test_two_dask_workers_give_the_sequential_trials(tmp_path, tiny_bert_dir, synthetic_task_dir):
    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:jittered_evaluate",
                                      algorithm={"name": "nsga2", "n_trials": 16, "pop_size": 4}))
    sequential = run_search(recipe, tmp_path / "seq", progress=False)
    parallel = run_search(recipe, tmp_path / "par", workers=2, processes=False, progress=False)
    assert trial_table(tmp_path / "par") == trial_table(tmp_path / "seq")
    assert len(trial_table(tmp_path / "seq")) == 16 + 8
    assert parallel.document["points"] == sequential.document["points"]
    assert parallel.document["hypervolume"] == sequential.document["hypervolume"]


@pytest.mark.slow
def test_real_runner_on_two_worker_processes(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """The real training runner in 2 Dask worker processes gives the same trials as inline evaluation."""
    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                      algorithm={"name": "nsga2", "n_trials": 4, "pop_size": 2},
                                      fidelity={"levels": [{"train_subset": 32, "max_steps": 2}]}))
    run_search(recipe, tmp_path / "seq", progress=False)
    run_search(recipe, tmp_path / "par", workers=2, processes=True, progress=False)
    assert trial_table(tmp_path / "par") == trial_table(tmp_path / "seq")


def test_scheduler_address(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`--scheduler ADDRESS` (any running Dask cluster) gives the same trials as a sequential run."""
    from distributed import LocalCluster

    recipe = load_recipe(write_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:jittered_evaluate",
                                      algorithm={"name": "random", "n_trials": 6, "pop_size": 3}))
    run_search(recipe, tmp_path / "seq", progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        run_search(recipe, tmp_path / "remote", scheduler=cluster.scheduler_address, progress=False)
    assert trial_table(tmp_path / "remote") == trial_table(tmp_path / "seq")
