"""Network rewiring: units and heads sorted by importance, the model's function unchanged, optimizer state and LoRA
weights carried along, the trainer's largest-only warm-up, the saved order reused by the LoRA merge and stand-alone
runs."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from peft_autoconfig.backbone import Dims
from peft_autoconfig.backbone.baselines import Importance, magnitude_importance
from peft_autoconfig.backbone.recipe import load_prune_recipe
from peft_autoconfig.backbone.rewiring import REWIRING_FILE, Rewiring, apply_rewiring, rewire
from peft_autoconfig.cli import main
from peft_autoconfig.search.recipe import RecipeError

from test_backbone_search import write_recipe


def inputs(vocab: int = 100) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {"input_ids": torch.randint(5, vocab, (3, 9), generator=generator)}


def random_importance(dims: Dims, seed: int = 0) -> Importance:
    generator = torch.Generator().manual_seed(seed)
    return Importance(torch.rand(dims.num_layers, dims.num_heads, generator=generator),
                      torch.rand(dims.num_layers, dims.intermediate_size, generator=generator))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_rewiring_sorts_units_and_heads_and_keeps_the_function(family, make_tiny_model):
    model = make_tiny_model(family)
    dims = Dims.from_config(model.config)
    before = model(**inputs()).logits
    rewiring = Rewiring.from_importance(magnitude_importance(model), dims)
    assert rewiring.units[0] != list(range(dims.intermediate_size))  # a real permutation
    rewire(model, rewiring)
    torch.testing.assert_close(model(**inputs()).logits, before, rtol=1e-5, atol=1e-5)
    after = magnitude_importance(model)
    group = dims.num_heads // dims.num_key_value_heads
    for units, heads in zip(after.units, after.heads):
        assert torch.all(units[:-1] >= units[1:])  # the first k units are now the k largest
        groups = heads.reshape(-1, group).sum(dim=1)
        assert torch.all(groups[:-1] >= groups[1:])


def test_rewiring_moves_lora_weights_and_adam_moments_with_their_units(make_tiny_model):
    model = get_peft_model(make_tiny_model("bert"), LoraConfig(r=2, target_modules=["intermediate.dense", "output.dense",
                                                                                        "query", "value"]))
    for name, parameter in model.named_parameters():  # non-zero LoRA B, so the adapter changes the output
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(**inputs(), labels=torch.tensor([0, 1, 0])).loss.backward()
    optimizer.step()
    before = model(**inputs()).logits
    up = model.base_model.model.bert.encoder.layer[1].intermediate.dense
    moment = optimizer.state[up.lora_B["default"].weight]["exp_avg"].clone()
    dims = Dims.from_config(model.config)
    rewiring = Rewiring.from_importance(random_importance(dims), dims)
    rewire(model, rewiring, optimizer)
    torch.testing.assert_close(model(**inputs()).logits, before, rtol=1e-5, atol=1e-5)
    order = torch.tensor(rewiring.units[1])
    torch.testing.assert_close(optimizer.state[up.lora_B["default"].weight]["exp_avg"], moment[order])


def test_a_saved_rewiring_is_reapplied(make_tiny_model, tmp_path):
    model, copy = make_tiny_model("bert"), make_tiny_model("bert")
    dims = Dims.from_config(model.config)
    rewiring = Rewiring.from_importance(random_importance(dims, seed=2), dims)
    rewire(model, rewiring)
    assert apply_rewiring(copy, tmp_path) is copy and Rewiring.load(tmp_path) is None  # nothing saved: unchanged
    rewiring.save(tmp_path)
    apply_rewiring(copy, tmp_path)
    for (name, a), b in zip(model.state_dict().items(), copy.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="another model"):
        rewire(make_tiny_model("llama"), rewiring)


def test_prune_model_rewires_after_the_warm_up_and_the_lora_merge_reuses_it(tiny_bert_dir, synthetic_task_dir,
                                                                            tmp_path):
    from peft_autoconfig.backbone.pipeline import load_supernetwork
    from peft_autoconfig.training.data import load_tokenizer

    recipe_path = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                               search={"n_trials": 4, "objectives": ["metric", "parameters"]},
                               supernet={"num_epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "max_length": 16,
                                         "lora": {"r": 4, "target_modules": ["intermediate.dense", "query"]},
                                         "rewire": {"importance": "taylor", "after": 0.5, "batches": 2}})
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe_path), "--out", str(out), "--no-progress"]) == 0
    rewiring = Rewiring.load(out / "supernet")
    assert rewiring is not None and sorted(rewiring.units[0]) == list(range(48))
    assert rewiring.units[0] != list(range(48))
    recipe = load_prune_recipe(recipe_path)
    done = json.loads((out / "supernet" / "DONE.json").read_text())
    tokenizer = load_tokenizer(recipe.model)
    merged = load_supernetwork(recipe, out / "supernet", 2, tokenizer, None)
    unpruned = json.loads((out / "front.json").read_text())["unpruned"]["metric"]
    assert unpruned == pytest.approx(done["metric"])  # the merged, rewired model is the model stage 1 evaluated
    (out / "supernet" / REWIRING_FILE).unlink()  # merged onto the model's own order instead: another model
    wrong = load_supernetwork(recipe, out / "supernet", 2, tokenizer, None)
    assert not all(torch.equal(a, b) for a, b in zip(merged.state_dict().values(), wrong.state_dict().values()))


def test_rewire_settings_are_validated(tiny_bert_dir, synthetic_task_dir, tmp_path):
    for rewire_spec, field in (({"importance": "random"}, "supernet.rewire.importance"),
                               ({"after": 1.0}, "supernet.rewire.after"), ({"batches": 0}, "supernet.rewire.batches")):
        path = write_recipe(tmp_path / "bad.yaml", tiny_bert_dir, synthetic_task_dir, supernet={"rewire": rewire_spec})
        with pytest.raises(RecipeError, match=field.replace(".", r"\.")):
            load_prune_recipe(path)
    path = write_recipe(tmp_path / "ds.yaml", tiny_bert_dir, synthetic_task_dir,
                        supernet={"rewire": {}, "deepspeed": "recipes/deepspeed/zero2.json"})
    with pytest.raises(RecipeError, match="supernet.rewire.*DeepSpeed"):
        load_prune_recipe(path)
