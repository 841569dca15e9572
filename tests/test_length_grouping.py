"""Batches of similar lengths: scoring batches sorted by length (same scores, fewer padded tokens) and the runner's
`group_by_length` (training and evaluation batches grouped by length; recorded; reachable from a recipe)."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import Trainer

from peft_autoconfig import MixedPetConfig
from peft_autoconfig.search.recipe import parse_recipe
from peft_autoconfig.search.superpet import SliceScorer
from peft_autoconfig.training import RunConfig, run
from peft_autoconfig.training.data import collated_batches, length_sorted_batches, load_tokenizer
from tests.conftest import WORDS, synthetic_rows
from tests.test_search_recipe import BASE, run_configs
from tests.test_search_supernet import SUBS, make_superpet


def varied_dataset(n: int, seed: int = 0) -> Dataset:
    """Token ids of lengths 3 to 30 with labels: a split whose padding depends on how it is batched."""
    rng = random.Random(seed)
    rows = [[2] + [rng.randrange(5, 60) for _ in range(rng.randint(1, 28))] + [3] for _ in range(n)]
    return Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows],
                              "labels": [rng.randint(0, 1) for _ in rows]})


def padded_tokens(batches) -> int:
    return sum(int(batch["input_ids"].numel()) for batch in batches)


def test_length_sorted_batches_hold_every_example_once_with_less_padding(tiny_bert_dir):
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    dataset = varied_dataset(50)
    batches = length_sorted_batches(dataset, tokenizer, 8)
    in_order = collated_batches(dataset, tokenizer, 8)
    assert [len(b["labels"]) for b in batches] == [8] * 6 + [2]
    seen = sorted(tuple(ids[mask.bool()].tolist()) for b in batches for ids, mask in
                  zip(b["input_ids"], b["attention_mask"]))
    assert seen == sorted(tuple(r) for r in dataset["input_ids"])  # every example once, unchanged
    for batch in batches:  # each batch pads to its own longest example only
        assert int(batch["attention_mask"].sum(1).max()) == batch["input_ids"].shape[1]
    assert padded_tokens(batches) < 0.8 * padded_tokens(in_order)
    assert sum(int(b["attention_mask"].sum()) for b in batches) == sum(len(r) for r in dataset["input_ids"])
    with pytest.raises(ValueError, match="batch size must be >= 1, got 0"):
        length_sorted_batches(dataset, tokenizer, 0)


def test_a_slice_scores_the_same_on_length_sorted_batches(make_tiny_model, tiny_bert_dir):
    """Sorting changes the padding, not the scores: every slice's logits over the split sum to the same value
    (a metric that sees every logit) and its accuracy is the same."""
    base, space, model, superpet = make_superpet(make_tiny_model)
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    dataset = varied_dataset(40, seed=1)
    in_order = collated_batches(dataset, tokenizer, 8)

    def metrics(prediction):
        logits = np.asarray(prediction.predictions, dtype=np.float64)
        return {"sum": float(logits.sum()), "accuracy": float((logits.argmax(-1) == prediction.label_ids).mean())}

    subs = SUBS + [None]
    for name in ("sum", "accuracy"):
        plain = SliceScorer(superpet, in_order, metrics, name)
        sorted_ = SliceScorer(superpet, length_sorted_batches(dataset, tokenizer, 8), metrics, name)
        expected = [plain(sub) for sub in subs]
        assert np.allclose([sorted_(sub) for sub in subs], expected, rtol=1e-5, atol=1e-4), name
        assert np.allclose(sorted_.score_many(subs), expected, rtol=1e-5, atol=1e-4), name
        if name == "sum":
            assert len(set(np.round(expected, 3))) == len(subs)  # the slices really differ


@pytest.fixture(scope="module")
def varied_task_dir(tmp_path_factory):
    """The synthetic task with 0 to 20 extra filler words per sentence: lengths vary, labels stay learnable."""
    directory = tmp_path_factory.mktemp("varied-task")
    rng = random.Random(0)
    for split, n, seed in (("train", 128, 0), ("validation", 256, 1), ("test", 16, 2)):
        rows = [{**row, "sentence": row["sentence"] + " " + " ".join(rng.choices(WORDS[8:], k=rng.randint(0, 20)))}
                for row in synthetic_rows(n, seed)]
        with open(directory / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["sentence", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return directory


class RecordingTrainer(Trainer):
    """Records each batch: training or not, padded tokens, real tokens, width, shortest example."""

    batches: list[tuple[bool, int, int, int, int]] = []

    def compute_loss(self, model, inputs, *args, **kwargs):
        mask = inputs["attention_mask"]
        RecordingTrainer.batches.append((model.training, int(mask.numel()), int(mask.sum()), int(mask.shape[1]),
                                         int(mask.sum(1).min())))
        return super().compute_loss(model, inputs, *args, **kwargs)


def test_group_by_length_trains_on_the_same_examples_with_less_padding(tiny_bert_dir, varied_task_dir, tmp_path):
    """Training batches are grouped only with `group_by_length`; evaluation is in length order either way (the same
    examples, so the same metrics, for fewer padded tokens)."""
    results, recorded = {}, {}
    for grouped in (False, True):
        RecordingTrainer.batches = []
        results[grouped] = run(RunConfig(
            str(tiny_bert_dir), str(varied_task_dir), MixedPetConfig(lora_rank=4, task_type="SEQ_CLS"),
            output_dir=str(tmp_path / str(grouped)), save_adapter=False, num_epochs=1, batch_size=8,
            learning_rate=5e-2, show_progress=False, group_by_length=grouped, trainer_class=RecordingTrainer))
        recorded[grouped] = list(RecordingTrainer.batches)
    # transformers groups within random mega-batches of up to 50 batches (a quarter of the split here)
    train = {grouped: [b for b in batches if b[0]] for grouped, batches in recorded.items()}
    assert len(train[True]) == len(train[False]) == 128 // 8
    assert sum(b[2] for b in train[True]) == sum(b[2] for b in train[False])  # one epoch: the same examples
    assert sum(b[1] for b in train[True]) < 0.9 * sum(b[1] for b in train[False])
    evaluation = [b for b in recorded[False] if not b[0]]
    assert len(evaluation) == 256 // 16
    assert all(width <= shortest for (_, _, _, width, _), (*_, shortest) in zip(evaluation, evaluation[1:]))
    assert results[True].metrics["accuracy"] >= 0 and results[True].eval_examples == 256
    written = json.loads((tmp_path / "True" / "metrics.json").read_text())
    assert written["run"]["group_by_length"] is True
    assert json.loads((tmp_path / "False" / "metrics.json").read_text())["run"]["group_by_length"] is False
    with pytest.raises(ValueError, match="`group_by_length` must be True or False, got 'yes'"):
        RunConfig("model", "rotten_tomatoes", None, group_by_length="yes")


def test_recipe_training_group_by_length_reaches_every_run_and_the_fingerprint(monkeypatch):
    plain = {**BASE, "fidelity": {"levels": [{"train_subset": 2000}]}}
    assert parse_recipe(plain).fingerprint() == "d0d2261de3483b78"  # unset: as before the field, journals resume
    grouped = parse_recipe({**plain, "training": {"group_by_length": True}})
    assert grouped.fingerprint() != parse_recipe(plain).fingerprint()
    assert grouped.training.run_kwargs()["group_by_length"] is True
    with pytest.raises(Exception, match=r"training\.group_by_length.*(bool|boolean)"):
        parse_recipe({**plain, "training": {"group_by_length": "yes"}})

    configs = run_configs(monkeypatch, [(recipe, recipe.fidelity_levels[0]) for recipe in (grouped, parse_recipe(plain))])
    assert [config.group_by_length for config in configs] == [True, False]


def test_length_grouping_benchmark_prints_each_ratio(tmp_path, tiny_bert_dir, varied_task_dir, capsys):
    """benchmarks/length_grouping.py on the tiny model and the varied-length task: a row per measurement with its
    ratio, fewer padded tokens grouped for both trainings and for scoring, the same scores, the whole runs."""
    from benchmarks import length_grouping
    from test_search_fakes import write_recipe

    recipe = write_recipe(
        tmp_path, tiny_bert_dir, varied_task_dir,
        task={"name": "varied", "data_files": {split: str(varied_task_dir / f"{split}.csv")
                                               for split in ("train", "validation", "test")}},
        algorithm={"name": "supernet", "settings": {"inner_trials": 8, "inner_pop_size": 4, "num_random": 1}},
        space={"modules": ["serial_adapter", "lora"], "sizes": {"serial_adapter": [0, 2, 8], "lora": [0, 2, 4]}},
        training={"batch_size": 8, "max_length": 32, "learning_rate": 0.01},
        fidelity={"levels": [{"train_subset": 128, "max_steps": 4}]}, final={"train_subset": 128, "num_epochs": 1})
    out = tmp_path / "grouping.json"
    length_grouping.main(["--recipe", str(recipe), "--steps", "4", "--repeats", "1", "--score-slices", "2",
                          "--full-runs", "0", "--json", str(out)])
    printed = capsys.readouterr().out
    for row in ("| LoRA r=8: step (ms) |", "| super-PET: padded tokens a step |", "| scoring a slice",
                "| final-budget LoRA r=8, seed 0: wall (s) |", "| final-budget LoRA r=8, seed 0: accuracy (test, 16 examples)"):
        assert row in printed, row
    saved = json.loads(out.read_text())
    for variant in ("LoRA r=8", "super-PET"):
        tokens = saved["step_padded_tokens"][variant]
        assert len(tokens["random"]) == len(tokens["grouped"]) == 4
        assert sum(tokens["grouped"]) < sum(tokens["random"]), variant
    padded = saved["scoring"]["padded_tokens"]
    assert padded["sorted"] < padded["split order"] and saved["scoring"]["max_score_difference"] <= 1 / 256
    assert [r["seed"] for r in saved["full_runs"]["grouped"]] == [0]
