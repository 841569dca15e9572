"""benchmarks/backbone_pruning.py on a tiny model: the table's rows, the plain reload check, Kendall tau, cost."""

from __future__ import annotations

import json

from test_backbone_search import write_recipe
from test_benchmarks import load_script


def test_backbone_pruning_benchmark_on_a_tiny_model(tiny_bert_dir, synthetic_task_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                          search={"n_trials": 6, "objectives": ["metric", "parameters"]})
    bench = load_script("backbone_pruning")
    argv = ["--recipe", str(recipe), "--out", str(tmp_path / "bench"), "--repeats", "2", "--rounds", "2", "--kendall", "3",
            "--standalone-max-steps", "2"]
    results = bench.main(argv)

    front = json.loads((tmp_path / "bench" / "prune" / "front.json").read_text())
    kinds = [row["kind"] for row in results["rows"]]
    assert kinds[:2] == ["super-network", "fine-tuned alone"]
    assert kinds.count("front") == len(front["points"])
    assert kinds.count("drop_top_layers") == kinds.count("importance") == len(front["points"])
    for row in results["rows"]:
        assert row["n_report"] == 64 and 0 <= row["metric"] <= 1  # the whole test split
        assert len(row["latency_rounds_s"]) == 2 and row["latency_s"] == min(row["latency_rounds_s"]) > 0
        if row["kind"] == "front":  # reloaded with plain transformers: the front's exact size
            assert row["parameters"] == row["front_parameters"]
        if row["kind"] in ("drop_top_layers", "importance"):
            baseline = next(b for b in front["baselines"] if b["name"] == row["name"])
            assert row["parameters"] == baseline["parameters"]
    assert results["rows"][0]["parameters"] == front["unpruned"]["parameters"]
    kendall = results["kendall"]
    assert kendall["n"] == 3 and len({p["subnetwork"] for p in kendall["pairs"]}) == 3
    assert kendall["tau"] is None or -1 <= kendall["tau"] <= 1
    assert results["cost"]["full_runs"] > 0
    printed = capsys.readouterr().out
    assert "| p00 " in printed and "Kendall tau" in printed and "full fine-tuning runs" in printed
    assert (tmp_path / "bench" / "results.md").read_text().strip() == printed.strip()
    assert (tmp_path / "bench" / "results.png").stat().st_size > 1000

    # resumed: nothing is trained again
    stamp = (tmp_path / "bench" / "full_finetune" / "metrics.json").stat().st_mtime_ns
    again = bench.main(argv)
    assert (tmp_path / "bench" / "full_finetune" / "metrics.json").stat().st_mtime_ns == stamp
    assert [p["standalone_score"] for p in again["kendall"]["pairs"]] == [p["standalone_score"] for p in kendall["pairs"]]


def test_slice_order_and_stand_alone_runs_on_a_rewired_supernetwork(tiny_bert_dir, synthetic_task_dir, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from peft_autoconfig.backbone.recipe import load_prune_recipe
    from peft_autoconfig.backbone.rewiring import Rewiring
    from peft_autoconfig.cli import main
    from peft_autoconfig.search.journal import read_journal

    recipe_path = write_recipe(tmp_path / "r.yaml", tiny_bert_dir, synthetic_task_dir,
                               search={"n_trials": 4, "objectives": ["metric", "parameters"]},
                               supernet={"rewire": {"after": 0.5, "batches": 2}})
    out = tmp_path / "bench"
    assert main(["prune-model", str(recipe_path), "--out", str(out / "prune"), "--no-progress"]) == 0
    rows = load_script("slice_order").main(["--recipe", str(recipe_path), "--supernet", str(out / "prune" / "supernet"),
                                            "--widths", "3", "48", "--importance-batches", "2",
                                            "--out", str(tmp_path / "order.json")])
    assert [(r["layers"], r["units"]) for r in rows] == [(2, 3), (2, 48)]
    assert rows[1]["first"] == rows[1]["taylor"] == rows[1]["magnitude"]  # all units: the same network
    assert all(0 <= r[k] <= 1 for r in rows for k in ("first", "taylor", "magnitude"))
    assert json.loads((tmp_path / "order.json").read_text())["rows"] == rows

    # a stand-alone run starts from the pre-trained model's units in the super-network's (rewired) order
    bench = load_script("backbone_pruning")
    recipe = load_prune_recipe(recipe_path)
    journal = read_journal(out / "prune" / "journal.jsonl")
    result = bench.kendall(recipe, out, journal, 1, 1, False)
    (init,) = list((out / "standalone").glob("*/init"))
    exported = load_file(init / "model.safetensors")["bert.encoder.layer.0.intermediate.dense.weight"]
    pretrained = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).state_dict()[
        "bert.encoder.layer.0.intermediate.dense.weight"]
    order = Rewiring.load(out / "prune" / "supernet").units[0]
    assert result["n"] == 1 and order != sorted(order)
    torch.testing.assert_close(exported, pretrained[order[: exported.shape[0]]])
