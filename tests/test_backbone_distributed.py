"""Stage 1 distributed (in subprocesses, on CPU): DeepSpeed ZeRO-2 matches plain training, and under torchrun with
two processes the sandwich trains with DDP and rank 0 alone searches and exports.

The ZeRO-2 test is skipped without DeepSpeed; the first DeepSpeed run on a machine compiles an op (~50 s, cached).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_backbone_search import write_recipe  # noqa: E402

ZERO2 = str(Path(__file__).resolve().parents[1] / "recipes" / "deepspeed" / "zero2.json")


def prune(recipe: Path, out: Path, processes: int = 1) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    completed = subprocess.run(
        [sys.executable, *launcher, "-m", "peft_autoconfig.cli", "prune-model", str(recipe), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.count("sub-networks asked") == 1  # the front is printed by rank 0 only
    return json.loads((out / "supernet" / "metrics.json").read_text())["loss_history"]


def test_zero2_supernetwork_matches_plain_training(tiny_bert_dir, synthetic_task_dir, tmp_path):
    pytest.importorskip("deepspeed")
    common = {"search": {"n_trials": 3, "pop_size": 3, "objectives": ["metric", "parameters"]}}
    plain = prune(write_recipe(tmp_path / "plain.yaml", tiny_bert_dir, synthetic_task_dir, **common), tmp_path / "plain")
    zero2 = prune(write_recipe(tmp_path / "zero2.yaml", tiny_bert_dir, synthetic_task_dir, supernet={"deepspeed": ZERO2},
                               **common), tmp_path / "zero2")
    assert len(zero2) == 6 and zero2 == pytest.approx(plain, abs=1e-4)
    assert json.loads((tmp_path / "zero2" / "front.json").read_text())["points"]


def test_two_processes_train_together_and_rank_zero_searches(tiny_bert_dir, synthetic_task_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir, supernet={"batch_size": 8},
                          search={"n_trials": 3, "pop_size": 3, "objectives": ["metric", "parameters"]})
    history = prune(recipe, tmp_path / "run", processes=2)
    assert len(history) == 6
    assert json.loads((tmp_path / "run" / "supernet" / "metrics.json").read_text())["world_size"] == 2
    lines = (tmp_path / "run" / "journal.jsonl").read_text().splitlines()
    assert sum('"type": "header"' in line for line in lines) == 1
    keys = [json.loads(line)["key"] for line in lines[1:]]
    assert len(keys) == len(set(keys)) >= 2  # one record per sub-network: one process wrote the journal
