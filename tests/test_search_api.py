"""The Python API for Trainer users: `search_peft` runs the search driver with a Trainer built from the user's
pieces, offline on a tiny model (this is the example of docs/search.md, "From Python")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import synthetic_rows

import peft_autoconfig  # noqa: F401
from peft_autoconfig.search import read_journal
from peft_autoconfig.search.api import search_peft


def test_search_peft_returns_the_front_as_configs_and_resumes(tmp_path, tiny_bert_dir):
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)

    def encode(rows):
        return Dataset.from_list(rows).map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=16),
                                           batched=True, remove_columns=["sentence"])

    train, validation = encode(synthetic_rows(64, seed=0)), encode(synthetic_rows(32, seed=1))
    inits = []

    def model_init():
        inits.append(1)
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)

    def compute_metrics(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=8, learning_rate=1e-2,
                             use_cpu=True, report_to=[], logging_strategy="no", disable_tqdm=True, seed=0)
    kwargs = dict(compute_metrics=compute_metrics, out_dir=tmp_path / "search", n_trials=4, pop_size=2,
                  fidelity=[{"train_subset": 32, "max_steps": 2}, {"max_steps": 3}], eta=2,
                  space={"modules": ["serial_adapter", "lora"], "sizes": {"serial_adapter": [0, 4, 8], "lora": [0, 2, 4]}},
                  data_collator=DataCollatorWithPadding(tokenizer))
    front = search_peft(model_init, train, validation, args, **kwargs)

    assert front and [o["trainable_parameters"] for _, o in front] == sorted(o["trainable_parameters"] for _, o in front)
    for config, objectives in front:
        assert set(objectives) == {"accuracy", "trainable_parameters"} and 0 <= objectives["accuracy"] <= 1
        model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), config)
        counted = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n)
        assert counted == objectives["trainable_parameters"]
    trials = read_journal(tmp_path / "search" / "journal.jsonl")
    assert len(trials) == 4 + 2 and all(t["status"] == "ok" for t in trials), [t["error"] for t in trials]
    assert {t["n_eval"] for t in trials} == {32}
    assert json.loads((tmp_path / "search" / "front.json").read_text())["points"]

    inits.clear()  # the same call again resumes: only the config is read, nothing is trained
    assert [o for _, o in search_peft(model_init, train, validation, args, **kwargs)] == [o for _, o in front]
    assert len(inits) == 1

    # per-block rates are validated before any training and belong to the journal's fingerprint
    with pytest.raises(ValueError, match=r"training.learning_rates"):
        search_peft(model_init, train, validation, args, learning_rates={"adapter": 1e-3}, **kwargs)
    from peft_autoconfig.search import JournalMismatchError

    with pytest.raises(JournalMismatchError):
        search_peft(model_init, train, validation, args, learning_rates={"lora": 1e-4}, **kwargs)


def test_trainer_evaluator_trains_with_per_block_groups(tmp_path, tiny_bert_dir, monkeypatch):
    """Each trial's Trainer builds the protocol's optimiser groups (one per block, the given rates)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from peft_autoconfig import MixedPetConfig
    from peft_autoconfig.front import config_to_dict
    from peft_autoconfig.search.api import TrainerEvaluator

    seen = {}
    original = Trainer.create_optimizer

    def spy(self, *args, **kwargs):
        optimizer = original(self, *args, **kwargs)
        seen.update({group["name"]: group["lr"] for group in optimizer.param_groups})
        return optimizer

    monkeypatch.setattr(Trainer, "create_optimizer", spy)
    data = Dataset.from_dict({"input_ids": [[5, 6, 7]] * 8, "labels": [0, 1] * 4})
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                             disable_tqdm=True, lr_scheduler_type="constant")
    evaluator = TrainerEvaluator(lambda: AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), data, data,
                                 args, learning_rates={"lora": 0.5, "head": 0.25})
    config = config_to_dict(MixedPetConfig(lora_rank=2, serial_adapter_size=4, task_type="SEQ_CLS"))
    outcome = evaluator({"config": config, "fidelity": {"max_steps": 1}, "seed": 0})
    assert outcome["trainable_parameters"] > 0
    from peft_autoconfig.training.optim import DEFAULT_LEARNING_RATES

    assert seen == {"lora": 0.5, "serial_adapter": DEFAULT_LEARNING_RATES["serial_adapter"], "head": 0.25}


def test_trainer_evaluator_trains_a_level_at_its_batch_size(tmp_path, tiny_bert_dir, monkeypatch):
    """A fidelity level's `batch_size` replaces `per_device_train_batch_size` for that trial: 8 examples in batches
    of 2 are 4 steps, where the arguments' batch of 4 makes 2."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from peft_autoconfig import MixedPetConfig
    from peft_autoconfig.front import config_to_dict
    from peft_autoconfig.search.api import TrainerEvaluator

    steps = []
    original = Trainer.training_step

    def count(self, *args, **kwargs):
        steps.append(self.args.per_device_train_batch_size)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", count)
    data = Dataset.from_dict({"input_ids": [[5, 6, 7]] * 8, "labels": [0, 1] * 4})
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                             disable_tqdm=True)
    evaluator = TrainerEvaluator(lambda: AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), data, data,
                                 args)
    config = config_to_dict(MixedPetConfig(lora_rank=2, task_type="SEQ_CLS"))
    evaluator({"config": config, "fidelity": {"num_epochs": 1}, "seed": 0})
    assert steps == [4, 4]
    steps.clear()
    evaluator({"config": config, "fidelity": {"num_epochs": 1, "batch_size": 2}, "seed": 0})
    assert steps == [2, 2, 2, 2]


def test_search_peft_names_a_missing_metric(tmp_path, tiny_bert_dir):
    from peft_autoconfig.search.api import TrainerEvaluator

    evaluator = TrainerEvaluator(model_init=None, train_dataset=None, eval_dataset=None, training_args=None,
                                 metric="f1")
    with pytest.raises(KeyError, match=r"`metric='f1'` is not among the evaluation metrics \['eval_accuracy'"):
        evaluator._metric({"eval_accuracy": 0.5, "eval_loss": 1.0})
    assert TrainerEvaluator(None, None, None, None)._metric({"eval_loss": 0.25, "epoch": 1.0}) == ("neg_loss", -0.25)


def test_search_peft_passes_strategy_options_validated(tmp_path, tiny_bert_dir):
    pytest.importorskip("botorch")
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    train = Dataset.from_list(synthetic_rows(32, seed=0)).map(
        lambda b: tokenizer(b["sentence"], truncation=True, max_length=16), batched=True, remove_columns=["sentence"])
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=8, use_cpu=True,
                             report_to=[], logging_strategy="no", disable_tqdm=True, seed=0)
    kwargs = dict(out_dir=tmp_path / "search", n_trials=3, pop_size=2, fidelity=[{"max_steps": 1}],
                  space={"modules": ["lora"], "sizes": {"lora": [0, 2, 4]}}, data_collator=DataCollatorWithPadding(tokenizer))

    def model_init():
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)

    with pytest.raises(ValueError, match=r"`algorithm.n_initial` applies to algorithm \['mobo'\] only, not 'nsga2'"):
        search_peft(model_init, train, train, args, algorithm_options={"n_initial": 2}, **kwargs)
    with pytest.raises(ValueError, match=r"algorithm.surrogate"):
        search_peft(model_init, train, train, args, algorithm="mobo", algorithm_options={"surrogate": "forest"}, **kwargs)
    front = search_peft(model_init, train, train, args, algorithm="mobo", algorithm_options={"n_initial": 2}, **kwargs)
    assert front
    header = json.loads((tmp_path / "search" / "journal.jsonl").read_text().splitlines()[0])
    assert header["recipe"]["algorithm"]["name"] == "mobo" and header["recipe"]["algorithm"]["n_initial"] == 2
