"""Stage 1: the sandwich rule with in-place distillation, through the runner's Trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from peft_autoconfig.backbone import BackboneSpace, Dims, SubNetwork, SuperNetwork
from peft_autoconfig.backbone.sandwich import BackboneSupernet, SandwichTrainer, sandwich_losses, sandwich_networks
from peft_autoconfig.training.runner import RunConfig, run

from conftest import synthetic_rows


def test_largest_and_smallest_both_get_gradient(make_tiny_model):
    model = make_tiny_model("bert").train()
    supernet = SuperNetwork(model)
    space = BackboneSpace(Dims.from_config(model.config), "medium")
    inputs = {"input_ids": torch.randint(5, 100, (4, 7)), "labels": torch.tensor([0, 1, 1, 0])}
    students = sandwich_networks(space, 2, np.random.default_rng(0))
    assert students["smallest"] == SubNetwork.uniform(space.dims, 1, 1, 1)
    losses, _ = sandwich_losses(model, supernet, students, inputs)
    assert set(losses) == {"largest", "distill_smallest", "distill_random_0", "distill_random_1"}
    assert all(math.isfinite(v.item()) for v in losses.values()) and losses["distill_smallest"].item() > 0
    layers = model.bert.encoder.layer

    losses["largest"].backward(retain_graph=True)
    assert layers[2].intermediate.dense.weight.grad[47].abs().sum() > 0  # a unit only the largest uses
    model.zero_grad(set_to_none=True)
    losses["distill_smallest"].backward()
    up = layers[0].intermediate.dense.weight.grad
    assert up[0].abs().sum() > 0 and up[1:].abs().sum() == 0  # the smallest's one unit, nothing else
    assert layers[2].intermediate.dense.weight.grad is None  # a layer the smallest drops
    assert supernet.active is None  # back to the full model after the step


def smallest_loss(model_dir, task_dir) -> float:
    """Cross-entropy of the smallest sub-network (1 layer, 1 head, 1 unit) on the validation rows."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = synthetic_rows(64, seed=1)
    batch = tokenizer([r["sentence"] for r in rows], padding=True, return_tensors="pt")
    supernet = SuperNetwork(model)
    with torch.no_grad(), supernet.use(SubNetwork.uniform(supernet.dims, 1, 1, 1)):
        logits = model(**batch).logits
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor([r["label"] for r in rows])))


def test_sandwich_training_through_the_runner_improves_the_smallest(tiny_bert_dir, synthetic_task_dir, tmp_path):
    out = tmp_path / "supernet"
    before = {k: v.clone() for k, v in AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).state_dict().items()}
    result = run(RunConfig(
        model_name_or_path=str(tiny_bert_dir), task=str(synthetic_task_dir), output_dir=str(out), num_epochs=4,
        learning_rate=3e-3, batch_size=16, max_length=16, show_progress=False, trainer_class=SandwichTrainer,
        trainer_kwargs={"supernet": BackboneSupernet(granularity="small"), "num_random": 1},
    ))
    assert math.isfinite(result.train_loss)
    after = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    shared = "bert.encoder.layer.0.output.dense.weight"
    assert not torch.equal(before[shared], after[shared])
    assert smallest_loss(out, synthetic_task_dir) < smallest_loss(tiny_bert_dir, synthetic_task_dir) - 0.05


class RecordingTrainer(SandwichTrainer):
    """Records the loss parts of every training step."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            self.seen.append((self.state.global_step, sorted(self.last_losses)))
        return result


def test_largest_only_warm_up_then_the_hook_once_then_the_sandwich(tiny_bert_dir, synthetic_task_dir, tmp_path):
    calls, seen = [], []

    def hook(trainer):
        calls.append(trainer.state.global_step)

    RecordingTrainer.seen = seen
    run(RunConfig(
        model_name_or_path=str(tiny_bert_dir), task=str(synthetic_task_dir), output_dir=str(tmp_path / "s"),
        max_steps=8, learning_rate=3e-3, batch_size=16, max_length=16, show_progress=False,
        trainer_class=RecordingTrainer,
        trainer_kwargs={"supernet": BackboneSupernet(granularity="small"), "num_random": 1,
                        "largest_only_fraction": 0.25, "before_sandwich": hook},
    ))
    assert calls == [2]  # int(0.25 * 8): once, at the first sandwich step
    assert [parts for step, parts in seen if step < 2] == [["largest"]] * 2
    assert all(parts == ["distill_random_0", "distill_smallest", "largest"] for step, parts in seen if step >= 2)
    assert len(seen) == 8
    with pytest.raises(ValueError, match="largest_only_fraction"):
        run(RunConfig(model_name_or_path=str(tiny_bert_dir), task=str(synthetic_task_dir), max_steps=1,
                      show_progress=False, trainer_class=SandwichTrainer,
                      trainer_kwargs={"supernet": BackboneSupernet(), "largest_only_fraction": 1.0}))
