"""Several super-PET slices in one forward pass (`SuperPet.use_rows`) and the batched sandwich built on it: each row
computes what its slice computes alone, the batched loss and gradients are the sequential rule's, bad input is
refused naming the field."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import get_peft_model

from peft_autoconfig import MixedPetConfig
from peft_autoconfig.search.space import SearchSpace, SpaceSpec
from peft_autoconfig.search.superpet import super_config
from peft_autoconfig.training.sandwich import batched_sandwich_loss, sandwich_losses
from peft_autoconfig.tuners.slicing import SuperPet
from tests.test_search_supernet import SPACE, SUBS, inputs, make_superpet, randomize

BIAS_SPACE = SpaceSpec(
    modules=("serial_adapter", "prefix", "lora", "bias"),
    sizes={"serial_adapter": (0, 2, 8), "prefix": (0, 2, 5), "lora": (0, 2, 4), "bias": (0, 1)},
    fixed={"lora_alpha": 8.0},
)
BIAS_SUBS = [
    MixedPetConfig(task_type="SEQ_CLS", bias_tuning={0: 1, 2: 1}, lora_rank=2, lora_alpha=8.0, prefix_length={1: 2}),
    MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=8, lora_rank=4, lora_alpha=8.0, layers_to_transform=[1]),
    MixedPetConfig(task_type="SEQ_CLS", bias_tuning=1, prefix_length=5),
]


def repeated(batch: dict[str, torch.Tensor], times: int) -> dict[str, torch.Tensor]:
    return {name: value.repeat(times, *([1] * (value.dim() - 1))) for name, value in batch.items()}


@pytest.mark.parametrize("spec, subs", [(SPACE, SUBS + [None]), (BIAS_SPACE, BIAS_SUBS + [None])],
                         ids=["adapters-prefix-lora", "bitfit-lora-alpha"])
def test_each_row_computes_its_slice_alone(make_tiny_model, spec, subs):
    base, space, model, superpet = make_superpet(make_tiny_model, spec)
    batch = inputs()
    rows = batch["input_ids"].shape[0]
    with torch.no_grad():
        alone = []
        for sub in subs:
            with superpet.use(sub):
                alone.append(model(**batch).logits)
        with superpet.use_rows(subs, rows):
            together = model(**repeated(batch, len(subs))).logits
    assert superpet.active is None and superpet.active_rows is None
    for i, expected in enumerate(alone):
        assert torch.allclose(together[i * rows:(i + 1) * rows], expected, atol=1e-5), i
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # the slices really differ


def test_batched_sandwich_has_the_sequential_loss_and_gradients(make_tiny_model):
    """Dropout off (eval mode), so the two are equal up to float rounding: one pass over the repeated batch gives
    the same loss and the same gradient on every trainable tensor as one pass per student."""
    base, space, model, superpet = make_superpet(make_tiny_model)
    batch = {**inputs(), "labels": torch.tensor([0, 1, 1])}
    students = {"a": SUBS[0], "b": SUBS[1], "c": SUBS[2]}
    trainable = [p for p in model.parameters() if p.requires_grad]

    def gradients(batched: bool, train_largest: bool):
        model.zero_grad()
        if batched:
            losses, outputs = batched_sandwich_loss(model, superpet, students, batch, train_largest)
            assert set(losses) == {"task_batched"}
            assert outputs.logits.shape[0] == 3 * (len(students) + train_largest)
        else:
            losses, _ = sandwich_losses(model, superpet, students, batch, distill=False, train_largest=train_largest)
        loss = torch.stack(list(losses.values())).sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in trainable]

    for train_largest in (False, True):
        loss, grads = gradients(True, train_largest)
        expected_loss, expected = gradients(False, train_largest)
        assert torch.allclose(loss, expected_loss, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in expected)
        for got, want in zip(grads, expected):
            assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert superpet.active is None


def test_rows_must_match_the_batch_and_a_slice_must_fit(make_tiny_model):
    """A batch of the wrong size and a slice the super-PET lacks are refused naming the field; either way the slice
    active before stays active (checked on its logits, which differ from the whole super-PET's)."""
    base, space, model, superpet = make_superpet(make_tiny_model)
    batch = inputs()
    with torch.no_grad():
        whole = model(**batch).logits
        superpet.select(SUBS[2])
        sliced = model(**batch).logits
    assert not torch.allclose(whole, sliced, atol=1e-4)
    with pytest.raises(ValueError, match=r"`use_rows`: the batch has 3 examples, the slices ask for 6"):
        with torch.no_grad(), superpet.use_rows([SUBS[0], SUBS[1]], 3):
            model(**batch)
    assert superpet.active == SUBS[2] and superpet.active_rows is None
    with pytest.raises(ValueError, match=r"at least one slice and `rows` >= 1"):
        superpet.select_rows([], 3)
    with pytest.raises(ValueError, match=r"`lora_rank` = 8 in layer 0 is larger than the super-PET's 4"):
        superpet.select_rows([SUBS[0], MixedPetConfig(task_type="SEQ_CLS", lora_rank=8)], 3)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, sliced, atol=1e-6) and superpet.active_rows is None
        superpet.select(None)
        assert torch.allclose(model(**batch).logits, whole, atol=1e-6)


def test_trainer_refuses_batched_students_with_distillation_or_without_rows(tmp_path, make_tiny_model):
    from transformers import TrainingArguments

    from peft_autoconfig.training.sandwich import SandwichTrainer

    base = make_tiny_model("bert")
    space = SearchSpace(base.config, SPACE)
    model = get_peft_model(copy.deepcopy(base), super_config(space))
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)

    class NoRows:
        def use(self, sub):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(ValueError, match=r"`batched_students=True` .* needs `distill=False`"):
        SandwichTrainer(model=model, args=args, supernet=lambda m: (SuperPet(m, space), space),
                        batched_students=True)
    with pytest.raises(ValueError, match=r"`batched_students=True` needs a switch .*`use_rows`.*NoRows has none"):
        SandwichTrainer(model=model, args=args, supernet=lambda m: (NoRows(), space), batched_students=True,
                        distill=False)


def test_batched_super_pet_trains_through_the_runner_in_one_pass_per_step(tmp_path, tiny_bert_dir,
                                                                          synthetic_task_dir, monkeypatch):
    """`settings.batched_students: true` reaches the trainer (recorded in the manifest, outside the super-PET's
    identity), runs one forward pass per step, and trains the slices' blocks."""
    from safetensors.torch import load_file

    from peft_autoconfig.search.oneshot import OneShotContext
    from peft_autoconfig.search.schema import RecipeError
    from peft_autoconfig.search.strategies.supernet import SupernetSettings
    from peft_autoconfig.search.superpet import train_superpet
    from peft_autoconfig.training import sandwich as sandwich_module

    calls = []
    original = sandwich_module.batched_sandwich_loss
    monkeypatch.setattr(sandwich_module, "batched_sandwich_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(SuperPet, "use", _eval_only_use(SuperPet.use))
    space = SearchSpace.from_pretrained(str(tiny_bert_dir), SpaceSpec(modules=("lora", "serial_adapter"),
                                                                      sizes={"lora": (0, 2, 4),
                                                                             "serial_adapter": (0, 2, 4)}))
    context = OneShotContext(model=str(tiny_bert_dir), task=str(synthetic_task_dir), space=space,
                             training={"batch_size": 8, "max_length": 16},
                             fidelity={"train_subset": 16, "max_steps": 3}, selection_split="validation",
                             eval_subset=8, seed=0, budgets=[], work_dir=tmp_path, progress=False)
    settings = SupernetSettings.parse({"num_random": 2, "distill": False, "train_largest": False,
                                       "batched_students": True})
    assert settings.students_in_one_pass() and "batched_students" not in settings.sandwich()
    manifest = train_superpet(context, settings.sandwich(), tmp_path / "superpet",
                              batched_students=settings.students_in_one_pass())
    assert manifest["batched_students"] is True and "batched_students" not in manifest["training"]["sandwich"]
    assert len(calls) == 3
    # not part of the identity: the same super-PET is reused one pass per student (a CPU after a GPU), not refused
    assert train_superpet(context, settings.sandwich(), tmp_path / "superpet") == manifest and len(calls) == 3
    weights = load_file(tmp_path / "superpet" / "adapter_model.safetensors")
    ups = [v for k, v in weights.items() if k.endswith("mixed_pet_lora.B.weight")]
    assert ups and all(v[:, :2].abs().sum() > 0 for v in ups)
    with pytest.raises(RecipeError, match=r"`algorithm.settings.batched_students: true` .* set `distill: false`"):
        SupernetSettings.parse({"batched_students": True})


def _eval_only_use(use):
    """`SuperPet.use` that only the evaluation may call (with None, the whole super-PET), never a student."""

    def checked(self, sub):
        if sub is not None:
            pytest.fail(f"a student ran on its own: {sub}")
        return use(self, sub)

    return checked


def test_slices_scored_side_by_side_get_the_scores_they_get_alone(make_tiny_model, tmp_path):
    """`SliceScorer.score_many` (batches of two sizes) equals scoring each slice alone, and `inner_search` with
    `slices_per_pass` logs the same points with the same metrics as one slice per pass."""
    import numpy as np

    from peft_autoconfig.search.strategies.supernet import inner_search
    from peft_autoconfig.search.superpet import SliceScorer

    base, space, model, superpet = make_superpet(make_tiny_model)
    generator = torch.Generator().manual_seed(3)
    batches = []
    for size in (4, 4, 3):
        ids = torch.randint(5, 100, (size, 7), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, 5:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (size,))})

    def logit_sum(prediction):  # a metric that sees every logit, so any row mix-up shows
        return {"sum": float(np.asarray(prediction.predictions, dtype=np.float64).sum())}

    scorer = SliceScorer(superpet, batches, logit_sum, "sum")
    rng = np.random.default_rng(0)
    subs = SUBS + [None] + [space.sample(rng) for _ in range(5)]
    together = scorer.score_many(subs)
    alone = [scorer(sub) for sub in subs]
    assert np.allclose(together, alone, rtol=1e-5, atol=1e-4)
    assert len(set(np.round(alone, 3))) == len(subs)  # every slice scores differently
    one = inner_search(space, scorer, tmp_path / "one.jsonl", inner="random", n_trials=12, pop_size=6, seed=0,
                       progress=False)
    many = inner_search(space, scorer, tmp_path / "many.jsonl", inner="random", n_trials=12, pop_size=6, seed=0,
                        progress=False, slices_per_pass=4)
    assert [e["key"] for e in one] == [e["key"] for e in many] and len(one) > 4
    assert np.allclose([e["metric"] for e in one], [e["metric"] for e in many], rtol=1e-5, atol=1e-4)


def test_superpet_steptime_smoke_prints_ratios_and_checks_scores(tmp_path, tiny_bert_dir, synthetic_task_dir, capsys):
    """benchmarks/superpet_steptime.py on the tiny model: one table row per variant with its ratio to LoRA r=8,
    the scoring line, and the JSON (the side-by-side scores agree with the scores alone, or the script fails)."""
    import json

    from benchmarks import superpet_steptime
    from tests.test_search_supernet import supernet_recipe

    recipe = supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, distill=False, train_largest=False,
                             batched_students=True)
    out = tmp_path / "steptime.json"
    result = superpet_steptime.main(["--recipe", str(recipe), "--steps", "5", "--repeats", "1", "--score-slices", "3",
                                     "--slices-per-pass", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    for row in ("| lora_r8 |", "| super-PET, one pass per student |", "| super-PET, students in one pass |"):
        assert row in printed
    assert "2 side by side" in printed and "2 students per step" in printed
    saved = json.loads(out.read_text())
    assert saved["median_step_s"] == result["median_step_s"] and set(saved["median_step_s"]) == {
        "lora_r8", "super-PET, one pass per student", "super-PET, students in one pass"}
    assert all(len(times) == 2 for times in saved["step_times_s"].values())  # 5 steps, the first 3 dropped
    assert saved["scoring"]["max_score_difference"] <= 2 / saved["scoring"]["examples"]


def test_superpet_ops_counts_fewer_ops_in_one_pass(tmp_path, tiny_bert_dir, synthetic_task_dir, capsys):
    """benchmarks/superpet_ops.py on the tiny model: a row per step with its op count and ratio to LoRA r=8; the
    students in one pass dispatch fewer operations than one pass each, side-by-side scoring fewer than one slice at a
    time, and switching alone fewer than a step."""
    import json

    from benchmarks import superpet_ops
    from tests.test_search_supernet import supernet_recipe

    recipe = supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, distill=False, train_largest=False)
    out = tmp_path / "ops.json"
    result = superpet_ops.main(["--recipe", str(recipe), "--repeats", "1", "--score-slices", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    ops = {row["step"]: row["ops"] for row in result["rows"]}
    assert list(ops)[0] == "LoRA r=8 q,v step" and all(name in printed for name in ops)
    assert ops["super-PET step, 3 students in one pass"] < ops["super-PET step, 3 students one pass each"]
    assert ops["scoring 3 slices side by side"] < ops["scoring 3 slices one at a time"]
    assert 0 < ops["use_rows of 3 students alone (no forward)"] < ops["super-PET step, 3 students in one pass"]
    assert json.loads(out.read_text())["rows"] == result["rows"]


def test_students_in_one_pass_and_side_by_side_scoring_default_to_the_gpu(monkeypatch):
    """Null `batched_students` / `slices_per_pass` mean: on (8 side by side) with a CUDA device, off (1) without;
    never batched with distillation; set values win."""
    from peft_autoconfig.search.strategies.supernet import SupernetSettings

    for cuda, batched, per_pass in ((True, True, 8), (False, False, 1)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        labels = SupernetSettings.parse({"distill": False, "train_largest": False})
        assert (labels.students_in_one_pass(), labels.scoring_slices_per_pass()) == (batched, per_pass)
        assert not SupernetSettings.parse({}).students_in_one_pass()   # distilled students: one pass each
        chosen = SupernetSettings.parse({"distill": False, "batched_students": False, "slices_per_pass": 3})
        assert (chosen.students_in_one_pass(), chosen.scoring_slices_per_pass()) == (False, 3)


def test_slicing_constants_are_built_once_per_device_and_the_cache_stays_bounded(monkeypatch):
    from peft_autoconfig.tuners import slicing

    constants, built = slicing._DeviceConstants(), []

    def build():
        built.append(1)
        return slicing._leading(6, 2, 0.5)

    first = constants.get(("leading", 6, 2, 0.5), build, torch.device("cpu"))
    assert constants.get(("leading", 6, 2, 0.5), build, torch.device("cpu")) is first and len(built) == 1
    assert first.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert constants.row_flags([0, 3, 1], 2, torch.device("cpu")).tolist() == [0, 0, 1, 1, 1, 1]
    # the flags depend only on presence: sizes 3 and 1 share the entry of any other present sizes
    assert constants.row_flags([0, 5, 2], 2, torch.device("cpu")) is constants.row_flags([0, 3, 1], 2, torch.device("cpu"))
    assert constants.row_lengths([2, 0], 3, torch.device("cpu")).tolist() == [2, 2, 2, 0, 0, 0]
    assert constants.leading(4, 4, 1.0, torch.device("cpu")).tolist() == [1.0] * 4

    monkeypatch.setattr(slicing._DeviceConstants, "MAX_ENTRIES", 2)
    bounded = slicing._DeviceConstants()
    for keep in range(5):
        bounded.leading(8, keep, 1.0, torch.device("cpu"))
        assert len(bounded._cache) <= 2


def test_a_slice_selected_again_reuses_its_masks(make_tiny_model):
    _, _, _, superpet = make_superpet(make_tiny_model)
    superpet.select(SUBS[0])
    masks = dict(superpet._masks)
    superpet.select(SUBS[1])
    superpet.select(SUBS[0])
    assert masks and all(superpet._masks[block] is mask for block, mask in masks.items())
