"""The weight-sharing super-PET: slices equal stand-alone configs, sandwich gradients stay in the slice, errors,
and the `supernet` one-shot strategy end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import get_peft_model

from peft_autoconfig import MixedPetConfig
from peft_autoconfig.search.space import SearchSpace, SpaceSpec
from peft_autoconfig.search.superpet import PetSupernet, super_config
from peft_autoconfig.training.sandwich import sandwich_losses
from peft_autoconfig.tuners.blocks import Bottleneck, LoraDelta, PrefixKV
from peft_autoconfig.tuners.slicing import SliceError, SuperPet

SPACE = SpaceSpec(
    modules=("serial_adapter", "parallel_adapter", "prefix", "lora"),
    sizes={"serial_adapter": (0, 2, 8), "parallel_adapter": (0, 3, 8), "prefix": (0, 2, 5), "lora": (0, 2, 4)},
    lora_targets=(("query", "value"), ("key",)),
)


def space_of(model, spec: SpaceSpec = SPACE) -> SearchSpace:
    return SearchSpace(model.config, spec)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every trainable tensor random values (B and `up` start at zero, which would hide slicing errors)."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def make_superpet(make_tiny_model, spec: SpaceSpec = SPACE, lora_alpha=None):
    base = make_tiny_model("bert")
    space = space_of(base, spec)
    config = super_config(space)
    if lora_alpha is not None:
        config = copy.deepcopy(config)
        config.lora_alpha = lora_alpha
    model = get_peft_model(copy.deepcopy(base), config)
    randomize(model)
    return base, space, model.eval(), SuperPet(model, space)


def inputs():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding, so the prefix's mask widening is exercised
    return {"input_ids": ids, "attention_mask": mask}


SUBS = [
    MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=2, parallel_adapter_size=3, prefix_length=2, lora_rank=2,
                   target_modules=["query", "value"], layers_to_transform=[0, 2]),
    MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=8, prefix_length=5, lora_rank=4, target_modules=["key"],
                   layers_to_transform=[1]),
    MixedPetConfig(task_type="SEQ_CLS", parallel_adapter_size={0: 8, 2: 3}, prefix_length={1: 2}),
]


@pytest.mark.parametrize("index", range(len(SUBS)))
def test_slice_equals_standalone_config_with_copied_weights(make_tiny_model, index):
    base, space, model, superpet = make_superpet(make_tiny_model)
    sub = SUBS[index]
    standalone = get_peft_model(copy.deepcopy(base), copy.deepcopy(sub)).eval()
    assert superpet.copy_slice_into(standalone) > 0
    with torch.no_grad():
        with superpet.use(sub):
            sliced = model(**inputs()).logits
        expected = standalone(**inputs()).logits
        full = model(**inputs()).logits
    assert torch.allclose(sliced, expected, atol=1e-5), (sliced, expected)
    assert not torch.allclose(full, expected, atol=1e-3)  # the slice really differs from the whole super-PET
    assert superpet.active is None


def test_slice_equals_super_pet_with_the_other_units_zeroed(make_tiny_model):
    """Without a prefix (zero prefix tokens still take attention), zeroing what lies outside the slice in the
    super-PET's own weights gives the slice's logits."""
    spec = SpaceSpec(modules=("serial_adapter", "parallel_adapter", "lora"),
                     sizes={"serial_adapter": (0, 2, 8), "parallel_adapter": (0, 3, 8), "lora": (0, 2, 4)})
    base, space, model, superpet = make_superpet(make_tiny_model, spec)
    sub = MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=2, parallel_adapter_size=3, lora_rank=2)
    with torch.no_grad():
        with superpet.use(sub):
            sliced = model(**inputs()).logits
        for module in model.modules():
            if isinstance(module, LoraDelta):
                module.A.weight[2:] = 0
                module.B.weight[:, 2:] = 0
            elif isinstance(module, Bottleneck):
                keep = 2 if module.down.out_features == 8 and module is _serial(model, module) else 3
                module.down.weight[keep:] = 0
                module.down.bias[keep:] = 0
                module.up.weight[:, keep:] = 0
        zeroed = model(**inputs()).logits
    assert torch.allclose(sliced, zeroed, atol=1e-5)


def _serial(model, block):
    """`block` if it is a serial adapter (its container is `mixed_pet_serial`), else None."""
    for name, module in model.named_modules():
        if module is block:
            return block if ".mixed_pet_serial." in name else None
    return None


def test_largest_slice_is_the_whole_super_pet(make_tiny_model):
    base, space, model, superpet = make_superpet(make_tiny_model)
    with torch.no_grad():
        full = model(**inputs()).logits
        with superpet.use(super_config(space)):
            largest = model(**inputs()).logits
        with superpet.use(space.largest_point()):  # one LoRA target set only: a proper slice of the union
            point = model(**inputs()).logits
    assert torch.equal(full, largest)
    assert not torch.allclose(full, point, atol=1e-4)
    single = SpaceSpec(modules=SPACE.modules, sizes=SPACE.sizes)  # the default target set: the union is the largest
    base, space, model, superpet = make_superpet(make_tiny_model, single)
    with torch.no_grad():
        full = model(**inputs()).logits
        with superpet.use(space.largest_point()):
            assert torch.equal(model(**inputs()).logits, full)


def test_lora_scaling_follows_the_sub_configuration(make_tiny_model):
    """With `lora_alpha`, a rank-2 slice is scaled by alpha / 2, as a stand-alone rank-2 LoRA."""
    spec = SpaceSpec(modules=("lora",), sizes={"lora": (0, 2, 4)}, fixed={"lora_alpha": 8.0})
    base, space, model, superpet = make_superpet(make_tiny_model, spec)
    sub = MixedPetConfig(task_type="SEQ_CLS", lora_rank=2, lora_alpha=8.0)
    standalone = get_peft_model(copy.deepcopy(base), copy.deepcopy(sub)).eval()
    superpet.copy_slice_into(standalone)
    with torch.no_grad(), superpet.use(sub):
        sliced = model(**inputs()).logits
    with torch.no_grad():
        assert torch.allclose(sliced, standalone(**inputs()).logits, atol=1e-5)


def test_sandwich_gradients_reach_only_the_active_slice(make_tiny_model):
    base, space, model, superpet = make_superpet(make_tiny_model)
    model.train()
    sub = SUBS[0]  # layers 0 and 2; LoRA rank 2 on query/value; serial 2, parallel 3, prefix 2
    batch = {**inputs(), "labels": torch.tensor([0, 1, 1])}
    losses, _ = sandwich_losses(model, superpet, {"sub": sub}, batch)
    assert set(losses) == {"largest", "distill_sub"} and losses["distill_sub"].item() > 0
    losses["distill_sub"].backward()
    layer = model.base_model.model.bert.encoder.layer
    query = layer[0].attention.self.query
    lora = query.mixed_pet_lora["default"]
    assert lora.A.weight.grad[:2].abs().sum() > 0 and lora.A.weight.grad[2:].abs().sum() == 0
    assert lora.B.weight.grad[:, :2].abs().sum() > 0 and lora.B.weight.grad[:, 2:].abs().sum() == 0
    key_lora = layer[0].attention.self.key.mixed_pet_lora["default"]
    assert key_lora.A.weight.grad is None  # the target set ("query", "value") has no `key`
    parallel = layer[0].output.dense.mixed_pet_parallel["default"]
    assert parallel.down.weight.grad[:3].abs().sum() > 0 and parallel.down.weight.grad[3:].abs().sum() == 0
    assert parallel.up.weight.grad[:, 3:].abs().sum() == 0
    prefix = layer[0].attention.self.key.mixed_pet_prefix["default"]
    assert prefix.key.grad[:, :2].abs().sum() > 0 and prefix.key.grad[:, 2:].abs().sum() == 0
    skipped = layer[1]  # not selected: none of its blocks learns from this student
    for module in skipped.modules():
        if isinstance(module, (LoraDelta, Bottleneck, PrefixKV)):
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.parameters())
    assert superpet.active is None


def test_students_only_sandwich_never_runs_the_largest(make_tiny_model):
    """`train_largest=False`: only the students run, each on the labels; the blocks outside every student's slice
    get no gradient (with the largest in the step they all would)."""
    base, space, model, superpet = make_superpet(make_tiny_model)
    model.train()
    used = []
    original = superpet.use
    superpet.use = lambda sub: used.append(sub) or original(sub)
    batch = {**inputs(), "labels": torch.tensor([0, 1, 1])}
    losses, outputs = sandwich_losses(model, superpet, {"sub": SUBS[0]}, batch, distill=False, train_largest=False)
    assert set(losses) == {"task_sub"} and used == [SUBS[0]] and outputs.logits.shape == (3, 2)
    losses["task_sub"].backward()
    skipped = model.base_model.model.bert.encoder.layer[1]   # not in SUBS[0]
    for module in skipped.modules():
        if isinstance(module, (LoraDelta, Bottleneck, PrefixKV)):
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.parameters())
    with pytest.raises(ValueError, match="`train_largest=False` needs `distill=False`"):
        sandwich_losses(model, superpet, {"sub": SUBS[0]}, batch, distill=True, train_largest=False)


def test_sandwich_students_are_points_of_the_space(make_tiny_model):
    base, space, model, superpet = make_superpet(make_tiny_model)
    switch, students = PetSupernet(space)(model)
    smallest = students.smallest()
    config = space.decode(smallest)
    sizes = (config.serial_adapter_size, config.parallel_adapter_size, config.prefix_length, config.lora_rank)
    assert sizes == (2, 3, 2, 2)
    assert config.layers_to_transform is None and config.target_modules == ["key"]
    rng = np.random.default_rng(0)
    samples = [students.sample(rng) for _ in range(20)]
    assert len({space.key(x) for x in samples}) > 10
    for x in samples:
        switch.check(x)  # every point of the space is a slice


def test_a_size_larger_than_trained_names_the_field(make_tiny_model):
    base, space, model, superpet = make_superpet(make_tiny_model)
    with pytest.raises(SliceError, match=r"`lora_rank` = 8 in layer 0 is larger than the super-PET's 4"):
        superpet.select(MixedPetConfig(task_type="SEQ_CLS", lora_rank=8))
    with pytest.raises(SliceError, match=r"`prefix_length` = 6 in layer 1 is larger"):
        superpet.select(MixedPetConfig(task_type="SEQ_CLS", prefix_length={1: 6}))
    with pytest.raises(SliceError, match=r"`target_modules`: 'attention.output.dense' \(layer 0\) has no LoRA"):
        superpet.select(MixedPetConfig(task_type="SEQ_CLS", lora_rank=2, target_modules=["attention.output.dense"]))
    with pytest.raises(SliceError, match=r"`adapter_non_linearity` = 'gelu' differs"):
        superpet.select(MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=2, adapter_non_linearity="gelu"))
    assert superpet.active is None  # a refused slice leaves the super-PET as it was


# -- the `supernet` one-shot strategy -------------------------------------------------------------------------------
def supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **settings):
    from test_search_fakes import write_recipe

    return write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir,
        algorithm={"name": "supernet", "settings": {"inner_trials": 40, "inner_pop_size": 8, "max_results": 3,
                                                    "num_random": 1, **settings}},
        space={"modules": ["serial_adapter", "lora"], "sizes": {"serial_adapter": [0, 2, 8], "lora": [0, 2, 4]}},
        fidelity={"levels": [{"train_subset": 128, "max_steps": 12}, {"train_subset": 64, "max_steps": 3}]},
    )


def test_supernet_search_end_to_end(tmp_path, tiny_bert_dir, synthetic_task_dir):
    from safetensors.torch import load_file

    from peft_autoconfig.search import load_recipe, read_journal, run_search

    path = supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, warm_start_from_slice=True)
    out = tmp_path / "out"
    result = run_search(load_recipe(path), out, progress=False)

    work = out / "oneshot"
    manifest = json.loads((work / "superpet" / "superpet.json").read_text())
    assert manifest["config"]["serial_adapter_size"] == 8 and manifest["config"]["lora_rank"] == 4
    weights = load_file(work / "superpet" / "adapter_model.safetensors")
    ups = [v for k, v in weights.items() if k.endswith("mixed_pet_serial.up.weight")]
    assert ups and all(v.abs().sum() > 0 for v in ups)  # the sandwich training moved the zero-initialised weights
    inner = [json.loads(line) for line in (work / "inner.jsonl").read_text().splitlines()]
    assert 10 <= len(inner) <= 40 and len({e["key"] for e in inner}) == len(inner)

    cached = json.loads((out / "oneshot.json").read_text())
    results = cached["results"]
    assert 1 <= len(results) <= 3
    space = SearchSpace.from_pretrained(str(tiny_bert_dir), load_recipe(path).space)
    best = {}
    for entry in inner:
        best[entry["trainable_parameters"]] = max(best.get(entry["trainable_parameters"], 0), entry["metric"])
    for r in results:
        config = space.decode(r["details"]["x"])
        assert r["trainable_parameters"] == space.cost(config) and r["score"] == r["details"]["superpet_metric"]
        # non-dominated among everything scored: nothing at most as large scores better
        assert all(metric <= r["score"] for size, metric in best.items() if size <= r["trainable_parameters"])
        slice_dir = Path(r["details"]["init_adapter"])  # the sliced weights, a plain peft adapter folder
        assert json.loads((slice_dir / "adapter_config.json").read_text())["lora_rank"] == config.lora_rank
    # each configuration re-trained stand-alone at the last level by the driver
    searched = [t for t in read_journal(out / "journal.jsonl") if t["kind"] == "search"]
    assert len(searched) == len(results) and {t["level"] for t in searched} == {1}
    assert all("|init=" in t["key"] for t in searched)  # each started from its slice (`warm_start_from_slice`)
    assert result.front and (out / "front.json").is_file()

    # a resume neither trains the super-PET nor scores slices again
    before = (work / "inner.jsonl").read_text()
    run_search(load_recipe(path), out, progress=False)
    assert (work / "inner.jsonl").read_text() == before


def test_a_super_pet_of_another_model_is_refused(tmp_path, tiny_bert_dir, synthetic_task_dir, make_tiny_model):
    from peft_autoconfig.search.superpet import SuperPetMismatchError, load_superpet, model_signature

    space = SearchSpace.from_pretrained(str(tiny_bert_dir), SpaceSpec(modules=("lora",), sizes={"lora": (0, 2)}))
    folder = tmp_path / "superpet"
    folder.mkdir()
    other = make_tiny_model("roberta").config
    manifest = {"model": "tiny-roberta", "model_signature": model_signature(other)}
    (folder / "superpet.json").write_text(json.dumps(manifest))
    with pytest.raises(SuperPetMismatchError, match=r"`model`: the super-PET in .* was trained on 'tiny-roberta'"):
        load_superpet(folder, str(tiny_bert_dir), str(synthetic_task_dir), space)
    (folder / "superpet.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"`algorithm.settings.superpet`: .* holds no finished super-PET"):
        load_superpet(folder, str(tiny_bert_dir), str(synthetic_task_dir), space)


@pytest.mark.parametrize(("settings", "message"), [
    ({"inner": "supernet"}, r"`algorithm.settings.inner`: must be an ask/tell strategy, one of \[.*'nsga2'.*\]"),
    ({"inner": "nsga3"}, r"`algorithm.settings.inner`: unknown algorithm 'nsga3'"),
    ({"inner_trials": 0}, r"`algorithm.settings.inner_trials`"),
    ({"inner_trails": 10}, r"unknown recipe field `algorithm.settings.inner_trails`"),
    ({"learning_rate_scale": 0}, r"`algorithm.settings.learning_rate_scale`"),
    ({"learning_rate_scale": 2}, r"`algorithm.settings.learning_rate_scale`"),
    ({"largest_only_fraction": 1.0}, r"`algorithm.settings.largest_only_fraction`: Input should be less than 1"),
    ({"largest_only_fraction": -0.1}, r"`algorithm.settings.largest_only_fraction`"),
    ({"train_largest": False}, r"`algorithm.settings.train_largest: false` trains the slices on the labels.*"
                               r"set `distill: false`"),
    ({"train_largest": False, "distill": False, "largest_only_fraction": 0.2}, r"`largest_only_fraction: 0`"),
    ({"warm_start_from_slice": True, "retrain": False}, r"`algorithm.settings.warm_start_from_slice: true` .*"
                                                         r"`retrain: false` skips"),
])
def test_bad_supernet_settings_name_the_field(tmp_path, tiny_bert_dir, synthetic_task_dir, settings, message):
    from peft_autoconfig.search import load_recipe
    from peft_autoconfig.search.schema import RecipeError

    with pytest.raises(RecipeError, match=message):
        load_recipe(supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **settings))


def test_warm_start_from_a_slice_through_the_runner(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`RunConfig.init_adapter`: a run starts from a saved slice (a learning rate of ~0 keeps its weights)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from peft_autoconfig.training.runner import RunConfig, run

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    space = SearchSpace(base.config, SpaceSpec(modules=("serial_adapter", "lora"),
                                               sizes={"serial_adapter": (0, 2, 8), "lora": (0, 2, 4)}))
    superpet_model = get_peft_model(copy.deepcopy(base), super_config(space))
    randomize(superpet_model)
    sub = MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=2, lora_rank=2, layers_to_transform=[1])
    standalone = get_peft_model(copy.deepcopy(base), copy.deepcopy(sub))
    SuperPet(superpet_model, space).copy_slice_into(standalone)
    standalone.save_pretrained(tmp_path / "slice")
    saved = load_file(tmp_path / "slice" / "adapter_model.safetensors")

    run(RunConfig(model_name_or_path=str(tiny_bert_dir), task=str(synthetic_task_dir), peft_config=sub,
                  init_adapter=str(tmp_path / "slice"), output_dir=str(tmp_path / "run"), max_steps=1,
                  learning_rate=1e-12, batch_size=8, max_length=16, eval_subset=8, show_progress=False))
    trained = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert set(trained) == set(saved)
    assert all(torch.allclose(trained[k], saved[k], atol=1e-6) for k in saved)
    assert any(saved[k].abs().sum() > 0 for k in saved if k.endswith("up.weight"))  # not the zero initialisation

    with pytest.raises(ValueError, match=r"`init_adapter`: the weights in .* do not fit the config"):
        run(RunConfig(model_name_or_path=str(tiny_bert_dir), task=str(synthetic_task_dir), show_progress=False,
                      peft_config=MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=8, lora_rank=2,
                                                 layers_to_transform=[1]),
                      init_adapter=str(tmp_path / "slice"), max_steps=1, batch_size=8, max_length=16))


def test_a_reused_super_pet_must_contain_the_space(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`settings.superpet`: a folder of this model loads; one trained at smaller sizes than the space is refused."""
    from transformers import AutoModelForSequenceClassification

    from peft_autoconfig.search.superpet import load_superpet, model_signature

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    small = MixedPetConfig(task_type="SEQ_CLS", serial_adapter_size=2, lora_rank=4)
    get_peft_model(base, small).save_pretrained(tmp_path / "superpet")
    manifest = {"model": str(tiny_bert_dir), "model_signature": model_signature(base.config)}
    (tmp_path / "superpet" / "superpet.json").write_text(json.dumps(manifest))
    inside = SpaceSpec(modules=("serial_adapter", "lora"), sizes={"serial_adapter": (0, 2), "lora": (0, 2, 4)})
    space = SearchSpace(base.config, inside)
    superpet = load_superpet(tmp_path / "superpet", str(tiny_bert_dir), str(synthetic_task_dir), space)
    assert superpet.config.serial_adapter_size == 2 and not superpet.model.training
    larger = SearchSpace(base.config, SpaceSpec(modules=("serial_adapter",), sizes={"serial_adapter": (0, 2, 8)}))
    with pytest.raises(SliceError, match=r"`serial_adapter_size` = 8 in layer 0 is larger than the super-PET's 2"):
        load_superpet(tmp_path / "superpet", str(tiny_bert_dir), str(synthetic_task_dir), larger)


def test_learning_rate_scale_multiplies_every_rate_of_the_super_pet(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`settings.learning_rate_scale`: the super-PET trains at the per-block rates (recipe's over the defaults)
    times the scale, recorded in its manifest, so a super-PET trained at another scale is refused on reuse."""
    from peft_autoconfig.search.oneshot import OneShotContext
    from peft_autoconfig.search.superpet import SuperPetMismatchError, train_superpet
    from peft_autoconfig.training.optim import DEFAULT_LEARNING_RATES

    space = SearchSpace.from_pretrained(str(tiny_bert_dir), SpaceSpec(modules=("lora",), sizes={"lora": (0, 2)}))
    context = OneShotContext(model=str(tiny_bert_dir), task=str(synthetic_task_dir), space=space,
                             training={"batch_size": 8, "max_length": 16, "learning_rates": {"lora": 1e-2}},
                             fidelity={"train_subset": 16, "max_steps": 2}, selection_split="validation",
                             eval_subset=8, seed=0, budgets=[], work_dir=tmp_path, progress=False)
    sandwich = {"num_random": 1, "temperature": 1.0, "distill": True}
    manifest = train_superpet(context, sandwich, tmp_path / "superpet", learning_rate_scale=0.5)
    rates = manifest["training"]["run"]["learning_rates"]
    assert rates == pytest.approx({**{k: v * 0.5 for k, v in DEFAULT_LEARNING_RATES.items()}, "lora": 5e-3})
    with pytest.raises(SuperPetMismatchError, match="`algorithm.settings`"):
        train_superpet(context, sandwich, tmp_path / "superpet", learning_rate_scale=1.0)


def test_largest_only_fraction_trains_the_teacher_alone_first(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                                              monkeypatch):
    """`settings.largest_only_fraction`: the first steps train the largest configuration alone (no students drawn),
    the sandwich runs after; it is part of the super-PET's identity only when set, so folders trained before the
    field existed are still reused."""
    from peft_autoconfig.search.oneshot import OneShotContext
    from peft_autoconfig.search.strategies.supernet import SupernetSettings
    from peft_autoconfig.search.superpet import train_superpet
    from peft_autoconfig.training import sandwich as sandwich_module

    drawn = []
    original = sandwich_module.sandwich_networks
    monkeypatch.setattr(sandwich_module, "sandwich_networks",
                        lambda *a, **k: drawn.append(1) or original(*a, **k))
    space = SearchSpace.from_pretrained(str(tiny_bert_dir), SpaceSpec(modules=("lora",), sizes={"lora": (0, 2)}))
    context = OneShotContext(model=str(tiny_bert_dir), task=str(synthetic_task_dir), space=space,
                             training={"batch_size": 8, "max_length": 16},
                             fidelity={"train_subset": 16, "max_steps": 4}, selection_split="validation",
                             eval_subset=8, seed=0, budgets=[], work_dir=tmp_path, progress=False)
    plain = SupernetSettings.parse({"num_random": 1}).sandwich()
    assert "largest_only_fraction" not in plain
    train_superpet(context, plain, tmp_path / "plain")
    assert len(drawn) == 4   # students every step

    drawn.clear()
    warm = SupernetSettings.parse({"num_random": 1, "largest_only_fraction": 0.5}).sandwich()
    manifest = train_superpet(context, warm, tmp_path / "warm")
    assert len(drawn) == 2   # steps 0 and 1: the largest alone
    assert manifest["training"]["sandwich"]["largest_only_fraction"] == 0.5


def test_students_only_super_pet_trains_through_the_runner(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """`settings.train_largest: false` reaches the trainer (recorded in the manifest) and still trains the blocks
    of the slices; the trainer refuses it with distillation."""
    from safetensors.torch import load_file

    from peft_autoconfig.search.oneshot import OneShotContext
    from peft_autoconfig.search.strategies.supernet import SupernetSettings
    from peft_autoconfig.search.superpet import train_superpet

    space = SearchSpace.from_pretrained(str(tiny_bert_dir), SpaceSpec(modules=("lora",), sizes={"lora": (0, 2, 4)}))
    context = OneShotContext(model=str(tiny_bert_dir), task=str(synthetic_task_dir), space=space,
                             training={"batch_size": 8, "max_length": 16},
                             fidelity={"train_subset": 16, "max_steps": 3}, selection_split="validation",
                             eval_subset=8, seed=0, budgets=[], work_dir=tmp_path, progress=False)
    sandwich = SupernetSettings.parse({"num_random": 1, "distill": False, "train_largest": False}).sandwich()
    manifest = train_superpet(context, sandwich, tmp_path / "superpet")
    assert manifest["training"]["sandwich"]["train_largest"] is False
    weights = load_file(tmp_path / "superpet" / "adapter_model.safetensors")
    ups = [v for k, v in weights.items() if k.endswith("mixed_pet_lora.B.weight")]
    assert ups and all(v[:, :2].abs().sum() > 0 for v in ups)   # the zero-initialised B moved in the slices
    with pytest.raises(ValueError, match="`train_largest=False` trains the students on the labels"):
        train_superpet(context, {"num_random": 1, "distill": True, "train_largest": False}, tmp_path / "bad")


def test_num_epochs_trains_the_super_pet_longer_than_the_first_level(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                                                     monkeypatch):
    """`settings.num_epochs`: the super-PET trains that many epochs of the first level's training subset (the level's
    `max_steps` dropped), recorded in its manifest; refused at zero, naming the field."""
    from peft_autoconfig.search.oneshot import OneShotContext
    from peft_autoconfig.search.recipe import RecipeError
    from peft_autoconfig.search.strategies.supernet import SupernetSettings
    from peft_autoconfig.search.superpet import train_superpet
    from peft_autoconfig.training import sandwich as sandwich_module

    steps = []
    original = sandwich_module.sandwich_networks
    monkeypatch.setattr(sandwich_module, "sandwich_networks", lambda *a, **k: steps.append(1) or original(*a, **k))
    space = SearchSpace.from_pretrained(str(tiny_bert_dir), SpaceSpec(modules=("lora",), sizes={"lora": (0, 2)}))
    context = OneShotContext(model=str(tiny_bert_dir), task=str(synthetic_task_dir), space=space,
                             training={"batch_size": 8, "max_length": 16},
                             fidelity={"train_subset": 16, "max_steps": 1}, selection_split="validation",
                             eval_subset=8, seed=0, budgets=[], work_dir=tmp_path, progress=False)
    settings = SupernetSettings.parse({"num_random": 1, "num_epochs": 3})
    manifest = train_superpet(context, settings.sandwich(), tmp_path / "superpet", settings.learning_rate_scale,
                              settings.num_epochs)
    assert len(steps) == 3 * 2   # 16 examples / batch 8 = 2 steps per epoch, not the level's 1 step
    assert manifest["training"]["run"]["num_epochs"] == 3 and manifest["training"]["run"]["max_steps"] == -1
    with pytest.raises(RecipeError, match="num_epochs"):
        SupernetSettings.parse({"num_epochs": 0})


def test_min_score_keeps_majority_class_slices_out_of_the_front():
    """`settings.min_score`: the cheapest slice scoring at the majority class is on every front unless left out;
    with the setting it is, and a threshold nothing reaches is refused naming the field."""
    from peft_autoconfig.search.strategies.supernet import SupernetSettings, inner_front

    entries = [{"key": k, "metric": m, "trainable_parameters": p}
               for k, m, p in [("a", 0.5867, 3_840), ("b", 0.7624, 11_526), ("c", 0.7820, 81_864), ("d", 0.70, 90_000)]]
    assert [e["key"] for e in inner_front(entries, 3)] == ["a", "b", "c"]
    assert [e["key"] for e in inner_front(entries, 3, min_score=0.6)] == ["b", "c"]
    with pytest.raises(ValueError, match=r"`algorithm.settings.min_score` = 0.9: no slice of the 4 scored "
                                         r".*best 0.782"):
        inner_front(entries, 3, min_score=0.9)
    assert SupernetSettings.parse({"min_score": 0.6}).min_score == 0.6


def test_retrain_false_sends_the_slices_front_straight_to_the_final_stage(tmp_path, tiny_bert_dir, synthetic_task_dir,
                                                                          monkeypatch):
    """`settings.retrain: false`: the front is chosen on the slices' own scores (journaled, nothing trained for them)
    and only the final stage trains; switching back to `retrain: true` resumes the same folder (same fingerprint),
    reuses the super-PET and its scores, and adds the last-level re-trainings."""
    import yaml

    from peft_autoconfig.commands.show import format_front
    from peft_autoconfig.search import load_recipe, read_journal, run_search

    log = tmp_path / "calls.log"
    monkeypatch.setenv("SEARCH_CALL_LOG", str(log))
    monkeypatch.setenv("SEARCH_FAKE_SLEEP", "0")
    path = supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, retrain=False)
    recipe = yaml.safe_load(path.read_text())
    recipe.update(evaluator="test_search_fakes:logged_slow_evaluate", baselines=["lora_r8"],
                  evaluation={"selection_split": "validation", "report_split": "test", "eval_subset": 32},
                  final={"train_subset": 128, "num_epochs": 1, "seeds": [0]})
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    result = run_search(load_recipe(path), out, progress=False)

    results = json.loads((out / "oneshot.json").read_text())["results"]
    trials = read_journal(out / "journal.jsonl")
    scored = [t for t in trials if t["kind"] == "search"]
    assert len(scored) == len(results) >= 1
    for trial, entry in zip(scored, results):
        assert trial["fidelity"] == {"oneshot_score": "supernet"} and trial["wall_time_s"] == 0.0
        assert trial["metric"] == entry["score"] and trial["n_eval"] == 32 and trial["eval_split"] == "validation"
        assert trial["standard_error"] == pytest.approx((entry["score"] * (1 - entry["score"]) / 32) ** 0.5)
        assert trial["trainable_parameters"] == entry["trainable_parameters"]
    calls = log.read_text().splitlines()
    assert calls and all(key.startswith("final:") for key in calls)   # nothing re-trained before the final stage
    front = {f"trial:{p['trial_id']}" for p in result.front}
    finals = {t["name"] for t in trials if t["kind"] == "final"}
    assert finals == front | {"lora_r8"}
    document = json.loads((out / "front.json").read_text())
    assert document["search"]["cost_full_runs"] is None and document["search"]["cost_lora_r8_runs"] is not None
    shown = format_front(document, out)
    assert f"s = {document['search']['cost_lora_r8_runs']:.1f} final-budget LoRA r=8 runs)" in shown
    assert "oneshot_score=supernet" in shown and "full-fidelity" not in shown
    scores = {t["trial_id"]: t["metric"] for t in scored}
    assert all(p["report"] is not None and p["selection"]["value"] == scores[p["trial_id"]]
               and p["fidelity"] == {"oneshot_score": "supernet"} for p in document["points"])

    # back to the default: the same --out, the super-PET and its scores reused, the front now re-trained first
    inner = (out / "oneshot" / "inner.jsonl").read_text()
    recipe["algorithm"]["settings"]["retrain"] = True
    path.write_text(yaml.safe_dump(recipe))
    assert load_recipe(path).fingerprint() == json.loads((out / "oneshot.json").read_text())["fingerprint"]
    run_search(load_recipe(path), out, progress=False)
    assert (out / "oneshot" / "inner.jsonl").read_text() == inner
    new_calls = log.read_text().splitlines()[len(calls):]
    assert len([k for k in new_calls if k.startswith("oneshot|")]) == len(results)


def test_retrain_false_needs_a_final_stage_and_the_two_objectives(tmp_path, tiny_bert_dir, synthetic_task_dir):
    import yaml

    from peft_autoconfig.search import load_recipe
    from peft_autoconfig.search.schema import RecipeError

    path = supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, retrain=False)
    with pytest.raises(RecipeError, match=r"`algorithm.settings.retrain`: false .*add a `final:` section"):
        load_recipe(path)
    recipe = yaml.safe_load(path.read_text())
    recipe.update(final={"num_epochs": 1}, objectives=["metric", "trainable_parameters", "peak_memory_bytes"])
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"`algorithm.settings.retrain`: false needs `objectives: \[metric, "
                                          r"trainable_parameters\]`.*peak_memory_bytes"):
        load_recipe(path)


def test_execution_settings_stay_out_of_the_fingerprint(tmp_path, tiny_bert_dir, synthetic_task_dir):
    """How the passes are batched and whether the front is re-trained change no trial: same fingerprint; a setting
    that changes the super-PET (`num_random`) does change it."""
    from peft_autoconfig.search import load_recipe

    def fingerprint(**settings):
        return load_recipe(supernet_recipe(tmp_path, tiny_bert_dir, synthetic_task_dir, **settings)).fingerprint()

    base = fingerprint()
    assert fingerprint(batched_students=False, slices_per_pass=4) == base
    assert fingerprint(num_random=2) != base
