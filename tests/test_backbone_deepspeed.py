"""Stage 1 under DeepSpeed ZeRO-2 (CPU, one process, in a subprocess): the sandwich loss matches plain training.

Skipped without DeepSpeed; the first DeepSpeed run on a machine compiles an op (~50 s, cached).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from test_backbone_search import write_recipe  # noqa: E402

ZERO2 = str(Path(__file__).resolve().parents[1] / "recipes" / "deepspeed" / "zero2.json")


def prune(recipe: Path, out: Path) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run(
        [sys.executable, "-m", "peft_autoconfig.cli", "prune-model", str(recipe), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((out / "supernet" / "metrics.json").read_text())["loss_history"]


def test_zero2_supernetwork_matches_plain_training(tiny_bert_dir, synthetic_task_dir, tmp_path):
    common = {"search": {"n_trials": 3, "pop_size": 3, "objectives": ["metric", "parameters"]}}
    plain = prune(write_recipe(tmp_path / "plain.yaml", tiny_bert_dir, synthetic_task_dir, **common), tmp_path / "plain")
    zero2 = prune(write_recipe(tmp_path / "zero2.yaml", tiny_bert_dir, synthetic_task_dir, supernet={"deepspeed": ZERO2},
                               **common), tmp_path / "zero2")
    assert len(zero2) == 6 and zero2 == pytest.approx(plain, abs=1e-4)
    assert json.loads((tmp_path / "zero2" / "front.json").read_text())["points"]
