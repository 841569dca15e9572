"""Two CPU processes under torchrun report the same losses and scores as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import WORDS, write_word_tokenizer

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def dropout_free_bert(directory: Path) -> Path:
    """A tiny BERT without dropout, so processes with different RNG streams compute the same function."""
    from transformers import BertConfig, BertForSequenceClassification

    write_word_tokenizer(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def train_command(model: Path, task: Path, config: Path, batch_size: int, *extra: str, steps: int = 6) -> list[str]:
    return ["-m", "peft_autoconfig.cli", "train", "--model", str(model), "--task", str(task), "--config", str(config),
            "--max-steps", str(steps), "--learning-rate", "0.05", "--batch-size", str(batch_size), "--json", *extra]


def launch(arguments: list[str], processes: int = 1, timeout: int = 600) -> dict:
    """Run the CLI (under torchrun when `processes` > 1) in a clean environment; the JSON result of rank 0."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    prefix = [sys.executable]
    if processes > 1:
        prefix += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    completed = subprocess.run(prefix + arguments, capture_output=True, text=True, timeout=timeout, env=env)
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1, completed.stdout[-2000:]  # printed by rank 0 only
    return json.loads(results[0])


def model_and_config(root: Path) -> tuple[Path, Path]:
    """A dropout-free tiny BERT and a LoRA + serial adapter config folder under `root` (shared with the DeepSpeed tests)."""
    from peft_autoconfig import MixedPetConfig

    model = dropout_free_bert(root / "model")
    config = root / "config"
    MixedPetConfig(lora_rank=4, serial_adapter_size=8, task_type="SEQ_CLS").save_pretrained(config)
    return model, config


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synthetic_task_dir):
    model, config = model_and_config(tmp_path_factory.mktemp("distributed"))
    return model, synthetic_task_dir, config


def test_two_processes_report_the_same_loss_as_one(setup):
    model, task, config = setup
    one = launch(train_command(model, task, config, 16))
    two = launch(train_command(model, task, config, 8), processes=2)
    assert len(one["loss_history"]) == len(two["loss_history"]) == 6
    assert two["loss_history"] == pytest.approx(one["loss_history"], abs=1e-5)
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-5)
    assert len(set(one["loss_history"])) > 1  # a real training trajectory, not a constant
