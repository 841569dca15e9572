"""Cheap, deterministic evaluators for search tests (named in recipes as `evaluator: test_search_fakes:<fn>`)."""

from __future__ import annotations

import os
import time
import zlib


def fake_metric(request: dict) -> float:
    """A deterministic 'accuracy' that grows with adapter capacity, with a point-dependent wiggle."""
    config = request["config"] or {"serial_adapter_size": 1000}  # None: full fine-tuning, the largest capacity

    def total(value):
        return sum(value.values()) if isinstance(value, dict) else value

    capacity = sum(total(config.get(k, 0)) for k in ("serial_adapter_size", "parallel_adapter_size", "prefix_length", "lora_rank"))
    layers = config.get("layers_to_transform")
    n_layers = 2 if layers is None else len(layers)
    wiggle = (zlib.crc32(request["key"].encode()) % 1000) / 1e5
    fidelity_bonus = 0.01 * request["level"]
    return round(0.5 + 0.4 * (1 - 1 / (1 + capacity * n_layers / 16)) + wiggle + fidelity_bonus, 6)


def fake_evaluate(request: dict) -> dict:
    return {"metric_name": "accuracy", "metric": fake_metric(request), "peak_memory_bytes": 1, "eval_examples": 200}


def logged_slow_evaluate(request: dict) -> dict:
    """Like `fake_evaluate`, but slow and logging every call to $SEARCH_CALL_LOG (one line: the trial key)."""
    time.sleep(float(os.environ.get("SEARCH_FAKE_SLEEP", "0.3")))
    with open(os.environ["SEARCH_CALL_LOG"], "a") as handle:
        handle.write(request["key"] + "\n")
    return fake_evaluate(request)


def failing_evaluate(request: dict) -> dict:
    """Fails for every point with a prefix of length >= 4 (to test that failures are recorded and the search goes on)."""
    if request["config"].get("prefix_length", 0) >= 4:
        raise RuntimeError("simulated out of memory")
    return fake_evaluate(request)


def flaky_evaluate(request: dict) -> dict:
    """Fails the first call only (marker file $SEARCH_FLAKY_MARK), then behaves like `logged_slow_evaluate`."""
    marker = os.environ["SEARCH_FLAKY_MARK"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("simulated transient failure")
    return logged_slow_evaluate(request)


def write_recipe(directory, model_dir, task_dir, **overrides) -> "Path":
    """A small search recipe (YAML) in `directory`; `overrides` replace top-level fields."""
    from pathlib import Path

    import yaml

    recipe = {
        "model": str(model_dir),
        "task": {"name": "synthetic", "data_files": {"train": str(Path(task_dir) / "train.csv"),
                                                     "validation": str(Path(task_dir) / "validation.csv")}},
        "seed": 0,
        "algorithm": {"name": "nsga2", "n_trials": 8, "pop_size": 4},
        "training": {"batch_size": 8, "max_length": 16, "learning_rate": 0.01},
        "evaluation": {"eval_subset": 32},
        "fidelity": {"levels": [{"train_subset": 64, "max_steps": 2}, {"train_subset": 128, "max_steps": 4}], "eta": 2},
    }
    recipe.update(overrides)
    path = Path(directory) / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def jittered_evaluate(request: dict) -> dict:
    """Like `fake_evaluate`, but each point takes a different time, so parallel trials finish out of order."""
    time.sleep(0.04 * (zlib.crc32(request["key"].encode()) % 5))
    return fake_evaluate(request)


def seed_noisy_evaluate(request: dict) -> dict:
    """Like `fake_evaluate`, plus up to 0.1 of noise that depends on the point and the seed (another seed of the same
    point scores differently, as real training does)."""
    noise = (zlib.crc32(f"{request['key']}|{request['seed']}".encode()) % 1000) / 1e4
    return {**fake_evaluate(request), "metric": round(fake_metric(request) + noise, 6)}
