"""Fixed-rule baselines at equal exported size: top-layer dropping and importance (Taylor / magnitude) pruning."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from peft_autoconfig.backbone import Dims, SubNetwork, SuperNetwork, exported_parameters, save_exported
from peft_autoconfig.backbone.baselines import (
    Importance, baseline_subnetwork, drop_top_layers, importance_pruning, magnitude_importance, taylor_importance,
)
from peft_autoconfig.cli import main

from test_backbone_search import write_recipe


def batches(n: int = 2, vocab: int = 100) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    return [{"input_ids": torch.randint(5, vocab, (4, 7), generator=generator),
             "labels": torch.randint(0, 2, (4,), generator=generator)} for _ in range(n)]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_drop_top_layers_is_the_deepest_that_fits(family, make_tiny_model):
    model = make_tiny_model(family)
    dims = Dims.from_config(model.config)
    two = exported_parameters(model, SubNetwork.uniform(dims, 2, dims.num_heads, dims.intermediate_size))
    for target, layers in ((two, 2), (two + 1, 2), (two - 1, 1), (model.num_parameters(), dims.num_layers), (1, 1)):
        sub = drop_top_layers(model, target)
        assert sub == SubNetwork.uniform(dims, layers, dims.num_heads, dims.intermediate_size)


def test_importance_pruning_keeps_the_top_units_at_one_width(make_tiny_model):
    model = make_tiny_model("bert")  # 3 layers, 4 heads, 48 units
    dims = Dims.from_config(model.config)
    units = torch.arange(48, dtype=torch.float).flip(0).repeat(3, 1)  # unit 0 most important ...
    units[1] = torch.arange(48, dtype=torch.float)  # ... but in layer 1 the last units are
    scores = Importance(torch.rand(3, 4), units)
    target = exported_parameters(model, SubNetwork.uniform(dims, 3, 4, 20)) + 5
    sub = importance_pruning(model, target, scores)
    assert sub.layers == (0, 1, 2)
    assert sub.heads == ((0, 1, 2, 3),) * 3  # BERT heads are only zeroed by the export: pruning them saves nothing
    assert sub.units == (tuple(range(20)), tuple(range(28, 48)), tuple(range(20)))
    assert exported_parameters(model, sub) <= target < exported_parameters(
        model, SubNetwork(sub.layers, sub.heads, tuple(tuple(range(21)) for _ in range(3))))
    assert baseline_subnetwork("importance", model, target, scores) == sub


def test_llama_importance_pruning_slices_whole_head_groups(make_tiny_model, tmp_path):
    model = make_tiny_model("llama")  # 4 query heads on 2 key/value heads, 56 units
    dims = Dims.from_config(model.config)
    heads = torch.tensor([[0.1, 0.2, 5.0, 0.1]] * 3)  # group 1 (heads 2, 3) wins
    scores = Importance(heads, torch.rand(3, 56, generator=torch.Generator().manual_seed(0)))
    target = exported_parameters(model, SubNetwork.uniform(dims, 3, 2, 28))
    sub = importance_pruning(model, target, scores)
    assert sub.heads == ((2, 3),) * 3 and len(sub.units[0]) == 28
    with SuperNetwork(model).use(sub), torch.no_grad():
        masked = model(input_ids=batches(1)[0]["input_ids"]).logits
    small = AutoModelForCausalLM.from_pretrained(save_exported(model, sub, tmp_path / "small")).eval()
    assert small.config.num_attention_heads == 2 and small.num_parameters() == exported_parameters(model, sub) == target
    with torch.no_grad():
        torch.testing.assert_close(small(input_ids=batches(1)[0]["input_ids"]).logits, masked, atol=1e-5, rtol=0)


def test_taylor_importance_is_zero_for_dead_units_and_leaves_weights_alone(make_tiny_model):
    model = make_tiny_model("bert")
    layer = model.bert.encoder.layer[1]
    with torch.no_grad():
        layer.output.dense.weight[:, 7] = 0.0  # unit 7 of layer 1 writes nothing
        layer.attention.output.dense.weight[:, 8:16] = 0.0  # head 1 of layer 1 writes nothing
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = taylor_importance(model, batches())
    assert scores.units.shape == (3, 48) and scores.heads.shape == (3, 4)
    assert scores.units[1, 7] == 0 and (scores.units.sum() - scores.units[1, 7]) > 0
    assert scores.heads[1, 1] == 0 and scores.heads[1, 0] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.bert.encoder.layer[0].output.dense._forward_pre_hooks  # its masks are gone

    # first order: the importance of a unit is |d loss / d mask| = |loss change| for a small mask change
    model.double()
    unit, batch, epsilon = int(scores.units[2].argmax()), batches(1)[0], 1e-5
    single = taylor_importance(model, [batch]).units[2, unit]
    with torch.no_grad():
        base = model(**batch).loss
        model.bert.encoder.layer[2].output.dense.weight[:, unit] *= 1 - epsilon  # = a mask of 1 - epsilon
        changed = model(**batch).loss
    assert float((base - changed).abs()) / epsilon == pytest.approx(float(single), rel=1e-3)


def test_magnitude_importance_ranks_a_scaled_unit_and_head_first(make_tiny_model):
    model = make_tiny_model("llama")
    mlp, attention = model.model.layers[0].mlp, model.model.layers[0].self_attn
    with torch.no_grad():
        mlp.down_proj.weight[:, 11] *= 50
        attention.o_proj.weight[:, 24:32] *= 50  # query head 3
    scores = magnitude_importance(model)
    assert int(scores.units[0].argmax()) == 11 and int(scores.heads[0].argmax()) == 3


def test_bad_baseline_arguments_name_the_field(make_tiny_model):
    model = make_tiny_model("bert")
    with pytest.raises(ValueError, match="target_parameters"):
        drop_top_layers(model, 0)
    with pytest.raises(ValueError, match="baselines.rules.*allowed"):
        baseline_subnetwork("magnitude", model, 1000)
    with pytest.raises(ValueError, match="needs `importance`"):
        baseline_subnetwork("importance", model, 1000)
    with pytest.raises(ValueError, match=r"this model needs \(3, 4\)"):
        importance_pruning(model, 1000, Importance(torch.ones(2, 4), torch.ones(2, 48)))


def test_prune_model_scores_baselines_at_each_front_size(tiny_bert_dir, synthetic_task_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                          search={"n_trials": 6, "objectives": ["metric", "parameters"]})
    out = tmp_path / "run"
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    document = json.loads((out / "front.json").read_text())
    points = {p["name"]: p for p in document["points"]}
    assert len(document["baselines"]) == 2 * len(points)
    for entry in document["baselines"]:
        target = points[entry["target"]]
        assert entry["target_parameters"] == target["parameters"]
        sub = SubNetwork.from_dict(entry["subnetwork"])
        if entry["rule"] == "drop_top_layers":
            assert all(len(h) == 4 and len(u) == 48 for h, u in zip(sub.heads, sub.units))
        else:
            assert sub.layers == (0, 1) and entry["importance"] == "taylor"
        smallest = 1 if entry["rule"] == "drop_top_layers" else 0
        assert entry["parameters"] <= target["parameters"] or len(sub.layers) == smallest or len(sub.units[0]) == 1
        assert 0 <= entry["metric"] <= 1 and entry["objectives"]["latency_s"] > 0
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()[1:]]
    assert {r["name"] for r in journal if r["kind"] == "baseline"} <= {"unpruned", "drop_top_layers", "importance"}
    printed = capsys.readouterr().out
    assert "drop_top_layers@p00" in printed and "importance@p00" in printed

    # resumed: the baselines come from the journal (nothing scored again)
    assert main(["prune-model", str(recipe), "--out", str(out), "--no-progress"]) == 0
    assert "(0 scored now)" in capsys.readouterr().out
    assert json.loads((out / "front.json").read_text())["baselines"] == document["baselines"]


def test_baselines_can_be_switched_off_and_bad_rules_are_refused(tiny_bert_dir, synthetic_task_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "bad.yaml", tiny_bert_dir, synthetic_task_dir, baselines={"rules": ["random"]})
    assert main(["prune-model", str(recipe), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "baselines.rules" in capsys.readouterr().err
    recipe = write_recipe(tmp_path / "off.yaml", tiny_bert_dir, synthetic_task_dir, baselines={"rules": []},
                          search={"n_trials": 3, "objectives": ["metric", "parameters"]})
    assert main(["prune-model", str(recipe), "--out", str(tmp_path / "off"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "off" / "front.json").read_text())["baselines"] == []
