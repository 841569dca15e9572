"""Smoke runs of the benchmark scripts, so they cannot rot (figures are not asserted: no timed tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_overhead_smoke_measures_every_method(capsys):
    overhead = load_script("overhead")
    rows = overhead.main(["--smoke"])
    names = [row["method"] for row in rows]
    assert names == [m.name for m in overhead.METHODS]
    by_name = {row["method"]: row for row in rows}
    assert by_name[overhead.PEFT_LORA]["time_vs_peft_lora"] == 1.0
    assert by_name[overhead.FULL]["time_vs_full"] == 1.0
    # same LoRA, same trainable parameters (head included) as peft's
    assert by_name["ours LoRA r=8 q,v"]["trainable"] == by_name[overhead.PEFT_LORA]["trainable"]
    assert all(row["time_s"] > 0 and row["memory_bytes"] > 0 for row in rows)
    # full fine-tuning holds gradients + AdamW state for every weight: more step memory than any PET method that trains
    # fewer weights (UniPELT's 512-wide prefix MLP, folded on save, trains more than this toy model has)
    full = by_name[overhead.FULL]
    smaller = [row for row in rows if row["method"] != overhead.FULL and row["trainable"] < full["trainable"]]
    assert len(smaller) >= len(rows) - 2
    assert all(row["memory_bytes"] < full["memory_bytes"] for row in smaller)
    out = capsys.readouterr().out
    assert "| ours UniPELT (defaults) |" in out and "target" in out


def test_search_quality_smoke_compares_algorithms_and_baselines(tmp_path, tiny_bert_dir, synthetic_task_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "model").symlink_to(tiny_bert_dir)
    (data / "task").symlink_to(synthetic_task_dir)
    search_quality = load_script("search_quality")
    results = search_quality.main(
        ["--smoke", "--data-dir", str(data), "--out", str(tmp_path / "out"), "--seeds", "0"]
    )
    methods = [row["method"] for row in results["summary"]]
    assert methods == ["nsga2", "random", "hand-designed baselines"]
    assert len(results["searches"]) == 2 and len(results["baselines"]) == 5
    for row in results["summary"]:
        assert 0.0 <= row["hv_mean"] <= 0.5 * 1.1  # normalised: accuracy gain over 0.5 x parameter share
    for search in results["searches"]:
        assert search["points"] and all(0.0 <= p["test_metric"] <= 1.0 for p in search["points"])
        assert search["cost_full_runs"] > 0
    assert (tmp_path / "out" / "fronts.png").stat().st_size > 0
    assert "| nsga2 |" in (tmp_path / "out" / "results.md").read_text()


def test_lr_sweep_smoke_writes_one_row_per_block_and_rate(tmp_path, tiny_bert_dir, synthetic_task_dir, capsys):
    lr_sweep = load_script("lr_sweep")
    out = tmp_path / "sweep.jsonl"
    argv = ["--model", str(tiny_bert_dir), "--task", str(synthetic_task_dir), "--blocks", "lora", "parallel_adapter",
            "--rates", "1e-3", "1e-2", "--train-subset", "16", "--max-steps", "1", "--out", str(out)]
    rows = lr_sweep.main(argv)
    assert sorted((r["block"], r["learning_rate"]) for r in rows) == [
        ("lora", 1e-3), ("lora", 1e-2), ("parallel_adapter", 1e-3), ("parallel_adapter", 1e-2)]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["trainable_parameters"] > 0 for r in rows)
    assert "| lora |" in capsys.readouterr().out
    assert len(lr_sweep.main(argv)) == 4  # resumed from the file: nothing trained twice
    assert len(out.read_text().splitlines()) == 4
