"""Per-block optimisation: block classification, parameter groups and their rates, errors, one AdamW step, and a
user's own Trainer with `pet_optimizer`."""

from __future__ import annotations

import json

import pytest
import torch
from peft import IA3Config, LoraConfig, PrefixTuningConfig, get_peft_model

from peft_autoconfig import MixedPetConfig, UniPELTConfig
from peft_autoconfig.training import RunConfig, run
from peft_autoconfig.training.optim import (
    ADAPTER_REFERENCE_WIDTH,
    DEFAULT_LEARNING_RATES,
    adapter_width_factor,
    LEARNING_RATE_KEYS,
    pet_optimizer,
    pet_optimizer_cls_and_kwargs,
    pet_parameter_groups,
    resolve_learning_rates,
    validate_learning_rates,
)
from peft_autoconfig.tuners.naming import BLOCK_TYPES, parameter_block_type


def mixed_model(make_tiny_model):
    config = MixedPetConfig(lora_rank=4, serial_adapter_size=8, parallel_adapter_size=8, prefix_length=3,
                            task_type="SEQ_CLS")
    return get_peft_model(make_tiny_model("bert"), config)


def groups_by_name(groups):
    return {group["name"]: group for group in groups}


def assert_partition(model, groups):
    """Every trainable parameter is in exactly one group, and nothing else is."""
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "name, block",
    [
        ("base_model.model.bert.encoder.layer.0.attention.self.query.mixed_pet_lora.default.lora_A", "lora"),
        ("base_model.model.bert.encoder.layer.0.output.dense.mixed_pet_serial.default.down.weight", "serial_adapter"),
        ("base_model.model.bert.encoder.layer.0.output.dense.mixed_pet_parallel.default.up.bias", "parallel_adapter"),
        ("base_model.model.bert.encoder.layer.0.attention.self.mixed_pet_prefix.default.key", "prefix"),
        ("base_model.model.bert.encoder.layer.0.attention.self.mixed_pet_prefix.default.gate.linear.weight", "gate"),
        ("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight", "lora"),
        ("prompt_encoder.default.embedding.weight", "prefix"),
        ("base_model.model.classifier.modules_to_save.default.weight", None),
        ("model.layers.0.mlp.gate_proj.weight", None),
        ("model.layers.0.block_sparse_moe.gate.weight", None),  # a MoE router is not a UniPELT gate
    ],
)
def test_parameter_block_type(name, block):
    assert parameter_block_type(name) == block
    assert block is None or block in BLOCK_TYPES


def test_mixed_config_gets_one_group_per_block_with_default_and_overridden_rates(make_tiny_model):
    model = mixed_model(make_tiny_model)
    groups = pet_parameter_groups(model)
    by_name = groups_by_name(groups)
    assert list(by_name) == ["lora", "serial_adapter", "parallel_adapter", "prefix", "head"]
    assert {name: group["lr"] for name, group in by_name.items()} == {
        name: DEFAULT_LEARNING_RATES[name] for name in by_name}
    assert all(group["weight_decay"] == 0.0 for group in groups)
    assert_partition(model, groups)
    head = {id(p) for p in model.base_model.model.classifier.parameters() if p.requires_grad}
    assert {id(p) for p in by_name["head"]["params"]} == head
    overridden = groups_by_name(pet_parameter_groups(model, {"prefix": 0.3, "head": 2e-4}))
    assert (overridden["prefix"]["lr"], overridden["head"]["lr"], overridden["lora"]["lr"]) == (0.3, 2e-4, DEFAULT_LEARNING_RATES["lora"])


def test_unipelt_gates_get_their_own_group(make_tiny_model):
    model = get_peft_model(make_tiny_model("bert"), UniPELTConfig(task_type="SEQ_CLS"))
    groups = groups_by_name(pet_parameter_groups(model, {"gate": 7e-3}))
    assert "gate" in groups and groups["gate"]["lr"] == 7e-3
    gate_params = {id(p) for name, p in model.named_parameters() if ".gate.linear." in name}
    assert gate_params and {id(p) for p in groups["gate"]["params"]} == gate_params
    assert_partition(model, list(groups.values()))


def test_full_finetuning_and_peft_baselines(make_tiny_model):
    full = make_tiny_model("bert")
    groups = pet_parameter_groups(full)
    assert [(g["name"], g["lr"]) for g in groups] == [("full", 5e-5)]
    assert_partition(full, groups)

    lora = get_peft_model(make_tiny_model("bert"), LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    assert [g["name"] for g in pet_parameter_groups(lora)] == ["lora", "head"]
    prefix = get_peft_model(make_tiny_model("bert"), PrefixTuningConfig(num_virtual_tokens=4, task_type="SEQ_CLS"))
    assert [g["name"] for g in pet_parameter_groups(prefix)] == ["prefix", "head"]


def test_unclassified_trainable_parameter_is_refused_by_name(make_tiny_model):
    model = get_peft_model(make_tiny_model("bert"), IA3Config(target_modules=["key", "value", "output.dense"],
                                                              feedforward_modules=["output.dense"], task_type="SEQ_CLS"))
    with pytest.raises(ValueError, match=r"trainable parameter `.*ia3_l.*` belongs to no known block type"):
        pet_parameter_groups(model)


def test_weight_decay_skips_biases_and_gates(make_tiny_model):
    model = get_peft_model(make_tiny_model("bert"), UniPELTConfig(task_type="SEQ_CLS"))
    groups = groups_by_name(pet_parameter_groups(model, weight_decay=0.1))
    assert groups["serial_adapter"]["weight_decay"] == 0.1 and groups["serial_adapter.no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["serial_adapter"]["params"])
    assert all(p.ndim == 1 for p in groups["serial_adapter.no_decay"]["params"])
    assert "gate" not in groups and groups["gate.no_decay"]["weight_decay"] == 0.0
    assert_partition(model, list(groups.values()))
    with pytest.raises(ValueError, match=r"`weight_decay` must be >= 0"):
        pet_parameter_groups(model, weight_decay=-1.0)


@pytest.mark.parametrize(
    "rates, error, message",
    [
        ({"adapter": 1e-3}, ValueError, r"`learning_rates` names an unknown block type 'adapter'; allowed: lora, "
                                        r"serial_adapter, parallel_adapter, prefix, prefix_mlp, bias, gate, head, full"),
        ({"prefix": 0.0}, ValueError, r"`learning_rates.prefix` must be > 0, got 0.0"),
        ({"lora": -1e-3}, ValueError, r"`learning_rates.lora` must be > 0"),
        ({"lora": "fast"}, TypeError, r"`learning_rates.lora` must be a number"),
        ([("lora", 1e-3)], TypeError, r"`learning_rates` must be a mapping"),
    ],
)
def test_bad_learning_rates_name_the_field(rates, error, message):
    with pytest.raises(error, match=message):
        validate_learning_rates(rates)
    with pytest.raises(error, match=message):
        RunConfig("model", "rotten_tomatoes", learning_rates=rates)


def test_learning_rate_replaces_every_default_and_learning_rates_override_it():
    assert resolve_learning_rates() == DEFAULT_LEARNING_RATES
    assert resolve_learning_rates(learning_rate=0.05) == dict.fromkeys(LEARNING_RATE_KEYS, 0.05)
    assert resolve_learning_rates({"prefix": 0.2}, 0.05) == {**dict.fromkeys(LEARNING_RATE_KEYS, 0.05), "prefix": 0.2}
    assert RunConfig("m", "t", learning_rates={"lora": 3e-3}).resolved_learning_rates()["lora"] == 3e-3
    for field, value in (("warmup_ratio", 1.0), ("warmup_ratio", -0.1), ("weight_decay", -0.01)):
        with pytest.raises(ValueError, match=f"`{field}` must be"):
            RunConfig("m", "t", **{field: value})


def test_a_block_with_a_tiny_rate_moves_much_less_after_one_step(make_tiny_model):
    torch.manual_seed(0)
    model = mixed_model(make_tiny_model)
    blocks = {"lora": "mixed_pet_lora", "serial_adapter": "mixed_pet_serial"}
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = pet_optimizer(model, {"lora": 1e-7, "serial_adapter": 1e-2})
    inputs = torch.randint(5, 100, (4, 12))
    model.train()
    loss = model(input_ids=inputs, labels=torch.tensor([0, 1, 0, 1])).loss
    loss.backward()
    optimizer.step()
    moved = {
        block: max((p.detach() - before[name]).abs().max().item()
                   for name, p in model.named_parameters() if container in name and name in before)
        for block, container in blocks.items()
    }
    assert moved["serial_adapter"] > 1e-3  # Adam's first step moves each weight by about the learning rate
    assert moved["lora"] < 1e-5


def test_users_trainer_with_pet_optimizer_warms_up_then_decays_each_group(make_tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = mixed_model(make_tiny_model)
    torch.manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(5, 100, (32, 8)).tolist(), "labels": [0, 1] * 16})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, per_device_train_batch_size=4, warmup_steps=0.2,
                             lr_scheduler_type="linear", report_to="none", save_strategy="no", logging_steps=1,
                             use_cpu=True, disable_tqdm=True)
    optimizer = pet_optimizer(model, {"prefix": 1e-2, "lora": 1e-3})
    seen = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})

    trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None), callbacks=[Record()])
    trainer.train()
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer  # accelerate wraps it
    assert [round(step["lora"] / 1e-3, 6) for step in seen] == [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    assert all(step["prefix"] == pytest.approx(10 * step["lora"]) for step in seen)


def test_runner_records_rates_and_eval_examples(tiny_bert_dir, synthetic_task_dir, tmp_path):
    config = MixedPetConfig(lora_rank=4, prefix_length=2, task_type="SEQ_CLS")
    result = run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), config, output_dir=str(tmp_path), max_steps=2,
                           eval_subset=24, learning_rates={"prefix": 0.02}, warmup_ratio=0.5, show_progress=False,
                           save_adapter=False))
    assert result.eval_examples == 24
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["run"]["learning_rates"] == {**DEFAULT_LEARNING_RATES, "prefix": 0.02}
    assert (saved["run"]["warmup_ratio"], saved["eval_examples"]) == (0.5, 24)


def test_model_init_trainer_builds_the_groups_from_optimizer_cls_and_kwargs(make_tiny_model, tmp_path):
    """With `model_init` Trainer refuses `optimizers`; `pet_optimizer_cls_and_kwargs` builds the groups on its model."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    data = Dataset.from_dict({"input_ids": [[5, 6, 7]] * 4, "labels": [0, 1] * 2})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to="none",
                             save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model_init=lambda: mixed_model(make_tiny_model), args=args, train_dataset=data,
                      optimizer_cls_and_kwargs=pet_optimizer_cls_and_kwargs({"prefix": 0.02}, weight_decay=0.01))
    trainer.train()
    rates = {group["name"]: group["initial_lr"] for group in trainer.optimizer.param_groups}
    rate = DEFAULT_LEARNING_RATES
    assert rates == {"lora": rate["lora"], "serial_adapter": rate["serial_adapter"],  # LoRA has no bias
                     "serial_adapter.no_decay": rate["serial_adapter"], "parallel_adapter": rate["parallel_adapter"],
                     "parallel_adapter.no_decay": rate["parallel_adapter"], "prefix": 0.02, "head": rate["head"],
                     "head.no_decay": rate["head"]}
    with pytest.raises(ValueError, match=r"`learning_rates.gate` must be > 0"):
        pet_optimizer_cls_and_kwargs({"gate": 0})


def test_wide_adapters_train_at_a_width_scaled_rate_one_group_per_width(make_tiny_model):
    config = MixedPetConfig(serial_adapter_size=8, parallel_adapter_size={0: 96, 1: 96, 2: 384}, task_type="SEQ_CLS")
    model = get_peft_model(make_tiny_model("bert"), config)
    groups = pet_parameter_groups(model, {"parallel_adapter": 2e-3})
    by_name = groups_by_name(groups)
    assert list(by_name) == ["serial_adapter", "parallel_adapter@96", "parallel_adapter@384", "head"]
    assert by_name["serial_adapter"]["lr"] == DEFAULT_LEARNING_RATES["serial_adapter"]  # 8 units: below the reference
    assert by_name["parallel_adapter@96"]["lr"] == pytest.approx(2e-3 * 0.5)  # sqrt(24 / 96)
    assert by_name["parallel_adapter@384"]["lr"] == pytest.approx(2e-3 * 0.25)
    assert_partition(model, groups)
    layers = model.base_model.model.bert.encoder.layer
    widest = {id(p) for p in layers[2].output.dense.mixed_pet_parallel.parameters()}
    assert {id(p) for p in by_name["parallel_adapter@384"]["params"]} == widest
    plain = groups_by_name(pet_parameter_groups(model, adapter_width_scaling=False))
    assert list(plain) == ["serial_adapter", "parallel_adapter", "head"]
    assert plain["parallel_adapter"]["lr"] == DEFAULT_LEARNING_RATES["parallel_adapter"]
    decayed = groups_by_name(pet_parameter_groups(model, weight_decay=0.1))
    assert {"parallel_adapter@384", "parallel_adapter@384.no_decay"} <= set(decayed)
    assert decayed["parallel_adapter@384.no_decay"]["weight_decay"] == 0.0


def test_adapter_width_factor():
    assert adapter_width_factor(ADAPTER_REFERENCE_WIDTH) == adapter_width_factor(1) == 1.0
    assert adapter_width_factor(4 * ADAPTER_REFERENCE_WIDTH) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="width"):
        adapter_width_factor(0)


def test_runner_and_users_trainer_apply_the_width_rule(tiny_bert_dir, synthetic_task_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    config = MixedPetConfig(parallel_adapter_size=96, task_type="SEQ_CLS")
    for scaling in (True, False):
        out = tmp_path / str(scaling)
        run(RunConfig(str(tiny_bert_dir), str(synthetic_task_dir), config, output_dir=str(out), max_steps=1,
                      adapter_width_scaling=scaling, show_progress=False, save_adapter=False))
        assert json.loads((out / "metrics.json").read_text())["run"]["adapter_width_scaling"] is scaling
    factory, kwargs = pet_optimizer_cls_and_kwargs(adapter_width_scaling=False)
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), config)
    rates = {group["name"]: group["lr"] for group in factory()(model, **kwargs).param_groups}
    assert rates["parallel_adapter"] == DEFAULT_LEARNING_RATES["parallel_adapter"]
    factory, kwargs = pet_optimizer_cls_and_kwargs()
    rates = {group["name"]: group["lr"] for group in factory()(model, **kwargs).param_groups}
    assert rates["parallel_adapter@96"] == pytest.approx(DEFAULT_LEARNING_RATES["parallel_adapter"] / 2)
