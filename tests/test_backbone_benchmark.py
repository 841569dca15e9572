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

    # resumed: nothing is trained again
    stamp = (tmp_path / "bench" / "full_finetune" / "metrics.json").stat().st_mtime_ns
    again = bench.main(argv)
    assert (tmp_path / "bench" / "full_finetune" / "metrics.json").stat().st_mtime_ns == stamp
    assert [p["standalone_score"] for p in again["kendall"]["pairs"]] == [p["standalone_score"] for p in kendall["pairs"]]
