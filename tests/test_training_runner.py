"""The Trainer runner on a tiny BERT and the synthetic task: learning, counts, saving/reloading, caching, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import LoraConfig, PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from peft_autoconfig import MixedPetConfig, count_trainable_parameters
from peft_autoconfig.training import ModelNotFoundError, RunConfig, RunResult, TrainingDiverged, load_task, run
from peft_autoconfig.training.callbacks import DivergenceCallback
from peft_autoconfig.training.data import load_tokenizer, seeded_subset, tokenized_splits
from peft_autoconfig.training.runner import EVAL_SUBSET_SEED

FAST = {"learning_rate": 5e-2, "batch_size": 16, "show_progress": False}


def mixed_config() -> MixedPetConfig:
    return MixedPetConfig(lora_rank=8, serial_adapter_size=16, task_type="SEQ_CLS")


def reload_and_score(model_dir, adapter_dir, task_dir) -> tuple[float, float]:
    """Eval loss and accuracy of the saved adapter, reloaded with plain peft, on the validation split."""
    task = load_task(str(task_dir))
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    validation = tokenized_splits(task, load_tokenizer(str(model_dir)), 128)["validation"]
    batch = tokenizer.pad({"input_ids": validation["input_ids"], "attention_mask": validation["attention_mask"]},
                          return_tensors="pt")
    labels = torch.tensor(validation["labels"])
    with torch.no_grad():
        logits = model(**batch).logits
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(-1) == labels).float().mean().item()


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, synthetic_task_dir, tmp_path_factory):
    """One saved MixedPetConfig run shared by the tests that only read its result."""
    config = mixed_config()
    before = config.to_dict()
    output_dir = tmp_path_factory.mktemp("run")
    result = run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), config, output_dir=str(output_dir),
                           max_steps=40, **FAST))
    return config, before, result, output_dir


def test_mixed_config_learns_the_task(trained):
    _, _, result, _ = trained
    assert isinstance(result, RunResult)
    assert result.metric_name == "accuracy" and result.metric_value == result.metrics["accuracy"] >= 0.9
    assert set(result.metrics) == {"accuracy", "loss"}  # the task's metric plus the eval loss
    history = result.loss_history
    assert len(history) == 40
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5 - 0.3
    assert result.train_loss == pytest.approx(sum(history) / len(history), rel=1e-5)
    assert result.wall_time_s > 0 and result.peak_memory_bytes > 50 * 2**20


def test_trainable_parameters_exclude_the_head_and_match_the_analytic_count(trained, tiny_bert_dir):
    config, _, result, _ = trained
    model_config = AutoConfig.from_pretrained(tiny_bert_dir)
    assert result.trainable_parameters == count_trainable_parameters(config, model_config)
    head = 2 * model_config.hidden_size + 2  # classifier Linear(hidden, 2); the pooler stays frozen
    assert result.trainable_parameters_with_head == result.trainable_parameters + head


def test_callers_config_is_not_mutated(trained):
    config, before, _, _ = trained
    assert config.to_dict() == before


def test_saved_adapter_and_metrics_reload_with_the_same_scores(trained, tiny_bert_dir, synthetic_task_dir):
    _, _, result, output_dir = trained
    assert (output_dir / "adapter_model.safetensors").is_file() and (output_dir / "adapter_config.json").is_file()
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved["metrics"] == result.metrics and saved["trainable_parameters"] == result.trainable_parameters
    assert (saved["peft_type"], saved["task"], saved["run"]["max_steps"]) == ("MIXED_PET", "synthetic-task0", 40)
    assert saved["peak_memory_kind"].startswith("process_peak_rss")  # CPU: whole-process peak RSS
    loss, accuracy = reload_and_score(tiny_bert_dir, output_dir, synthetic_task_dir)
    assert loss == pytest.approx(result.metrics["loss"], abs=1e-5)
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_peft_lora_and_mixed_lora_train_identically(tiny_bert_dir, synthetic_task_dir):
    """Our LoRA block and peft's LoRA (same rank, alpha, targets, seed) give the same losses step by step."""
    common = {"max_steps": 8, **FAST}
    ours = run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir),
                         MixedPetConfig(lora_rank=8, lora_alpha=8, task_type="SEQ_CLS"), **common))
    peft_lora = run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir),
                              LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"),
                              **common))
    assert ours.trainable_parameters == peft_lora.trainable_parameters == 2 * 2 * 8 * (32 + 32)
    assert ours.loss_history == pytest.approx(peft_lora.loss_history, abs=1e-5)
    assert ours.metrics["loss"] == pytest.approx(peft_lora.metrics["loss"], abs=1e-5)


def test_full_finetuning_counts_every_weight_but_the_head(tiny_bert_dir, synthetic_task_dir):
    result = run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), None, max_steps=2, **FAST))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.classifier.parameters())
    assert (result.trainable_parameters, result.trainable_parameters_with_head) == (total - head, total)
    assert result.output_dir is None


def test_config_without_task_type_still_trains_the_head(tiny_bert_dir, synthetic_task_dir):
    result = run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), MixedPetConfig(lora_rank=4), max_steps=2, **FAST))
    assert result.trainable_parameters_with_head - result.trainable_parameters == 2 * 32 + 2


def test_subsets_set_steps_and_the_eval_subset_ignores_the_seed(tiny_bert_dir, synthetic_task_dir):
    result = run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), mixed_config(), train_subset=48,
                           eval_subset=20, num_epochs=2, **FAST))
    assert len(result.loss_history) == 2 * 3  # 48 examples / batch 16, two epochs
    split = tokenized_splits(load_task(str(synthetic_task_dir)), load_tokenizer(str(tiny_bert_dir)), 128)["train"]
    a, b, c = (seeded_subset(split, 20, seed)["input_ids"] for seed in (0, 0, 1))
    assert a == b and a != c and len(a) == 20
    assert seeded_subset(split, None, 0) is split and seeded_subset(split, 10_000, 0) is split
    assert EVAL_SUBSET_SEED == 0


def test_quiet_repeated_runs_print_nothing_and_reuse_tokenized_data(tiny_bert_dir, synthetic_task_dir, capfd):
    config = RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), mixed_config(), max_steps=2, **FAST)
    run(config)
    task, tokenizer = load_task(str(synthetic_task_dir)), load_tokenizer(str(tiny_bert_dir))
    cached = tokenized_splits(task, tokenizer, 128)
    capfd.readouterr()
    run(config)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert tokenized_splits(task, tokenizer, 128) is cached


def test_nan_loss_raises_training_diverged(tiny_bert_dir, synthetic_task_dir):
    with pytest.raises(TrainingDiverged, match=r"training loss became nan at step \d+"):
        run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), mixed_config(), max_steps=4,
                      learning_rate=math.inf, show_progress=False))
    with pytest.raises(TrainingDiverged, match="inf"):
        DivergenceCallback().on_log(type("A", (), {"learning_rate": 1.0})(), type("S", (), {"global_step": 3})(),
                                    None, logs={"loss": math.inf})


def test_missing_model_and_unlabelled_eval_split_are_clear_errors(tiny_bert_dir, synthetic_task_dir, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model `.*missing-model` could not be loaded.*local"):
        run(RunConfig(str(tmp_path / "missing-model"), str(synthetic_task_dir), None, show_progress=False))
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        run(RunConfig("some-org/some-model", str(synthetic_task_dir), None, show_progress=False))
    with pytest.raises(ValueError, match=r"`eval_split` 'dev' is not a labelled split.*\['test', 'train', 'validation'\]"):
        run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), None, eval_split="dev", show_progress=False))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"train_subset": 0}, ValueError, "`train_subset` must be a positive int"),
        ({"max_steps": 0}, ValueError, "`max_steps` must be -1"),
        ({"num_epochs": 0}, ValueError, "`num_epochs` must be > 0"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be >= 1"),
        ({"deepspeed": "nowhere.json"}, FileNotFoundError, r"recipes/deepspeed/zero2\.json"),
    ],
)
def test_run_config_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        RunConfig("model", "rotten_tomatoes", None, **kwargs)
