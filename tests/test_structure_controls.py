"""The random-structure control of benchmarks/structure_controls.py: structures that fill a budget, drawn fairly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from transformers import BertConfig

from peft_autoconfig.tuners.mixed.config import MixedPetConfig
from peft_autoconfig.tuners.plan import count_trainable_parameters
from tests.test_benchmarks import load_script

MODULES = ["serial_adapter", "parallel_adapter", "prefix", "lora", "bias"]


@pytest.fixture(scope="module")
def controls():
    return load_script("structure_controls")


@pytest.fixture(scope="module")
def model_config():
    return BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                      vocab_size=100)


def sizes_of(config: dict, controls) -> dict[str, dict[int, int]]:
    return {field: {int(k): v for k, v in (config.get(field) or {}).items()} for field in controls.BLOCK_FIELDS.values()}


@pytest.mark.parametrize("budget", [150, 2_000, 20_000])
def test_structure_fills_the_budget_and_no_unit_fits_after(controls, model_config, budget):
    rng = np.random.default_rng(0)
    for _ in range(3):
        config, count = controls.random_structure(model_config, 3, MODULES, budget, rng)
        analytic = count_trainable_parameters(MixedPetConfig(**config), model_config)
        assert count == analytic <= budget
        fixed = {k: v for k, v in config.items() if k not in controls.BLOCK_FIELDS.values()}
        fixed.pop("peft_type")
        sizes = sizes_of(config, controls)
        for field in controls.BLOCK_FIELDS.values():
            for layer in range(3):
                grown = copy.deepcopy(sizes)
                current = grown[field].get(layer, 0)
                if field == "bias_tuning" and current:
                    continue
                grown[field][layer] = current + 1
                assert controls.structure_count(grown, fixed, model_config) > budget, (field, layer, config)


def test_max_sizes_bound_every_block(controls, model_config):
    rng = np.random.default_rng(1)
    config, _ = controls.random_structure(model_config, 3, ["prefix", "lora"], 50_000, rng,
                                          max_sizes={"prefix": 2, "lora": 3})
    assert max(config["prefix_length"].values()) <= 2
    assert max(config["lora_rank"].values()) <= 3
    # every unit allowed is then used: the budget is larger than the space's largest structure
    assert config["prefix_length"] == {"0": 2, "1": 2, "2": 2} and config["lora_rank"] == {"0": 3, "1": 3, "2": 3}


def test_draws_are_seeded_and_vary(controls, model_config):
    draw = lambda seed: [controls.random_structure(model_config, 3, MODULES, 5_000, rng)[0]  # noqa: E731
                         for rng in [np.random.default_rng(seed)] for _ in range(4)]
    assert draw(3) == draw(3)
    assert len({controls.describe(c) for c in draw(3)}) > 1


def test_bad_input_is_refused(controls, model_config):
    with pytest.raises(ValueError, match="no unit of .*fits a budget of 10 parameters"):
        controls.random_structure(model_config, 3, MODULES, 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"modules \['gates'\] cannot be drawn; allowed: \['serial_adapter'"):
        controls.random_structure(model_config, 3, ["lora", "gates"], 1_000, np.random.default_rng(0))


def test_report_counts_random_structures_beaten(controls):
    results = {"metric": "accuracy", "budgets": [{
        "budget": 2271, "percent": 0.01, "random_mean": 0.75, "random_sd": 0.01, "nearest_front_point": None,
        "strategies": [{"strategy": "s3pet", "trainable_parameters": 1921, "structure": "prefix 4:1", "test": 0.76,
                        "beats": 2, "of": 3}],
        "random": [{"name": f"random-2271-{i}", "trainable_parameters": 2000, "structure": "lora(v) 1:2",
                    "test": v} for i, v in enumerate([0.74, 0.75, 0.77])],
    }]}
    text = controls.format_report(results)
    assert "| 2,271 (0.01 %) | **s3pet** | 1,921 | prefix 4:1 | **0.7600** |" in text
    assert "s3pet 0.7600: 2 of 3" in text
    # structures are described as `show` describes configs: blocks, per-layer sizes, LoRA targets
    assert controls.describe({"peft_type": "MIXED_PET", "lora_rank": {"5": 2}, "target_modules": ["value"],
                              "bias_tuning": {"1": 1}}) == "LoRA r{5: 2} (value) · BitFit {1: 1} (all) · layers all"


def test_controls_train_in_a_copy_of_the_run_under_its_final_stage(controls, tmp_path, tiny_bert_dir, synthetic_task_dir):
    import json

    from peft_autoconfig.search import load_recipe, read_journal, run_search
    from tests.test_search_fakes import write_recipe

    space = {"modules": ["lora", "parallel_adapter", "prefix"], "layer_mode": "sizes",
             "sizes": {"lora": [0, 4], "parallel_adapter": [0, 8], "prefix": [0, 4]}}
    path = write_recipe(
        tmp_path, tiny_bert_dir, synthetic_task_dir, evaluator="test_search_fakes:fake_evaluate", space=space,
        algorithm={"name": "prune", "settings": {"keep_fraction": 0.5, "retrain_steps": 2}}, budgets=[400, 1500],
        fidelity={"levels": [{"train_subset": 64, "max_steps": 4}]},
        final={"train_subset": 64, "num_epochs": 1, "seeds": [0]},
    )
    run = tmp_path / "run"
    run_search(load_recipe(path), run, progress=False)
    before = (run / "journal.jsonl").read_text()
    out = tmp_path / "controls"
    results = controls.main(["--runs", str(run), "--out", str(out), "--n", "2", "--front", str(run)])
    assert (run / "journal.jsonl").read_text() == before  # the run itself is untouched
    assert [b["budget"] for b in results["budgets"]] == [400, 1500]
    journal = read_journal(out / "journal.jsonl")
    finals = {t["name"]: t for t in journal if t["kind"] == "final"}
    for b in results["budgets"]:
        assert [r["name"] for r in b["random"]] == [f"random-{b['budget']}-0", f"random-{b['budget']}-1"]
        for r in b["random"]:
            assert r["trainable_parameters"] <= b["budget"] and r["test"] == finals[r["name"]]["metric"]
        (strategy,) = b["strategies"]
        assert strategy["strategy"] == "prune" and strategy["test"] is not None
        assert strategy["beats"] == sum(strategy["test"] > r["test"] for r in b["random"])
        assert b["nearest_front_point"]["trainable_parameters"] <= b["budget"]
    # the strategy's own runs are reused from the copied journal, not trained again
    assert sum(t["kind"] == "search" for t in journal) == 2
    assert (out / "controls.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "controls.json").read_text()) == results
    lines = len((out / "journal.jsonl").read_text().splitlines())
    controls.main(["--runs", str(run), "--out", str(out), "--n", "2"])  # resumed: the same draws, nothing trained
    assert len((out / "journal.jsonl").read_text().splitlines()) == lines
