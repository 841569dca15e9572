"""What batches of similar lengths save, measured side by side in one process: training steps of LoRA r=8 and of the
super-PET on random batches against `group_by_length` batches, and slices scored on split-order batches against
length-sorted ones (`training.data.length_sorted_batches`, what `SliceScorer` now uses); optionally whole
final-budget LoRA r=8 runs both ways, with their report-split metric (grouping changes the batches, so the result).

    python benchmarks/length_grouping.py [--recipe recipes/rotten_tomatoes_supernet.yaml] [--model PATH] \\
        [--steps 50] [--repeats 2] [--score-slices 8] [--full-runs 0 1] [--json OUT.json]

Steps: each variant trains `--steps` optimiser steps on the recipe's last fidelity level's training subset (transformers
groups lengths within random mega-batches of 50 batches, so 50 steps are one mega-batch), `--repeats` times,
alternating; the mean step time is compared (a grouped run's steps differ in length on purpose: the mean is its cost).
Scoring: `--score-slices` random points of the space on the whole selection split, both ways, alternating; the scores
must agree (checked). The table gives each ratio grouped / random.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from peft_autoconfig.search import Search
from peft_autoconfig.search.strategies.supernet import SupernetSettings
from peft_autoconfig.search.superpet import PetSupernet, SliceScorer, super_config
from peft_autoconfig.training.data import collated_batches
from peft_autoconfig.training.runner import RunConfig, run
from peft_autoconfig.training.sandwich import SandwichTrainer
from peft_autoconfig.tuners.mixed import MixedPetConfig
from peft_autoconfig.tuners.slicing import SuperPet

try:   # as a script (python benchmarks/...) and as a module (tests load it by path, with the repository importable)
    from superpet_steptime import STEP_TIMES, STEP_TOKENS, _sync, add_recipe_arguments, recipe_from, timed
except ImportError:
    from benchmarks.superpet_steptime import STEP_TIMES, STEP_TOKENS, _sync, add_recipe_arguments, recipe_from, timed


def protocol_kwargs(search: Search) -> dict[str, Any]:
    """The recipe's training settings without a budget of their own or a sampling (each measurement sets those)."""
    return {k: v for k, v in search.recipe.training.run_kwargs().items()
            if k not in ("num_epochs", "max_steps", "group_by_length")}


def level_kwargs(search: Search) -> dict[str, Any]:
    """`protocol_kwargs` at the recipe's last fidelity level: its training subset, and its batch size when it sets one."""
    last = search.recipe.fidelity_levels[-1]
    batch = {"batch_size": last["batch_size"]} if last.get("batch_size") else {}
    return {**protocol_kwargs(search), "train_subset": last.get("train_subset"), **batch}


def step_costs(search: Search, config: MixedPetConfig, steps: int, trainer: type[Trainer],
               trainer_kwargs: dict[str, Any], grouped: bool) -> tuple[list[float], list[int]]:
    """Step times and padded tokens of `steps` optimiser steps of `config`."""
    STEP_TIMES.clear()
    STEP_TOKENS.clear()
    with tempfile.TemporaryDirectory() as out:
        run(RunConfig(
            model_name_or_path=search.model, task=search.recipe.task, peft_config=config, output_dir=out,
            max_steps=steps, eval_subset=16, show_progress=False, trainer_class=timed(trainer),
            trainer_kwargs=trainer_kwargs, group_by_length=grouped, save_adapter=False, **level_kwargs(search),
        ))
    return list(STEP_TIMES), list(STEP_TOKENS)


def split_order_scorer(scorer: SliceScorer, tokenizer: Any, dataset: Any, batch_size: int) -> SliceScorer:
    """`scorer` on batches in the split's order (how slices were scored before sorting)."""
    return SliceScorer(scorer.superpet, collated_batches(dataset, tokenizer, batch_size), scorer.compute_metrics,
                       scorer.metric_name)


def scoring_costs(search: Search, n: int, seed: int = 0) -> dict[str, Any]:
    """Seconds per slice on the whole selection split, split order against length-sorted, and the largest score
    difference between the two (must be at most one example's worth)."""
    from peft import get_peft_model

    from peft_autoconfig.training.data import load_tokenizer, tokenized_splits
    from peft_autoconfig.training.model import load_model
    from peft_autoconfig.training.tasks import load_splits, load_task, resolve_num_labels

    task = load_task(search.recipe.task)
    tokenizer = load_tokenizer(search.model)
    base = load_model(search.model, resolve_num_labels(task, load_splits(task)), tokenizer, task.label_names)
    model = get_peft_model(base, super_config(search.space)).eval()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    training = search.recipe.training
    batch_size = 2 * int(training.batch_size or 16)
    max_length = int(training.max_length or 128)
    split = search.recipe.evaluation.selection_split
    scorers = {"sorted": SliceScorer.for_task(SuperPet(model, search.space), search.model, search.recipe.task, split,
                                              None, max_length, batch_size)}
    dataset = tokenized_splits(task, tokenizer, min(max_length, task.max_length or max_length))[split]
    scorers["split order"] = split_order_scorer(scorers["sorted"], tokenizer, dataset, batch_size)
    rng = np.random.default_rng(seed)
    points = [search.space.sample(rng) for _ in range(n)]
    seconds: dict[str, list[float]] = {name: [] for name in scorers}
    scores: dict[str, list[float]] = {name: [] for name in scorers}
    scorers["sorted"](points[0])  # warm-up
    for point in points:
        for name, scorer in scorers.items():
            _sync()
            start = time.perf_counter()
            scores[name].append(scorer(point))
            _sync()
            seconds[name].append(time.perf_counter() - start)
    difference = max(abs(a - b) for a, b in zip(scores["sorted"], scores["split order"]))
    examples = scorers["sorted"].n_examples
    if difference > 1 / examples + 1e-9:
        raise AssertionError(f"length-sorted scores differ from split-order scores by {difference}")
    padded = {name: sum(int(b["input_ids"].numel()) for b in scorer.batches) for name, scorer in scorers.items()}
    return {"s_per_slice": {name: statistics.mean(values) for name, values in seconds.items()},
            "padded_tokens": padded, "examples": examples, "max_score_difference": difference}


def full_runs(search: Search, seeds: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Whole final-budget LoRA r=8 runs on random and grouped batches per seed: wall time and report-split metric."""
    final = search.recipe.final
    if final is None:
        raise SystemExit("--full-runs needs a recipe with a `final:` section")
    kwargs = protocol_kwargs(search)  # the final stage trains at `training.batch_size`, whatever the levels set
    results: dict[str, list[dict[str, Any]]] = {"random": [], "grouped": []}
    for seed in seeds:
        for name in results:
            result = run(RunConfig(
                model_name_or_path=search.model, task=search.recipe.task,
                peft_config=MixedPetConfig(lora_rank=8, task_type="SEQ_CLS"), output_dir=None, seed=seed,
                train_subset=final.train_subset, num_epochs=final.num_epochs, show_progress=False,
                eval_split=search.recipe.evaluation.report_split, group_by_length=name == "grouped", **kwargs))
            results[name].append({"seed": seed, "wall_time_s": result.wall_time_s, "metric": result.metric_value,
                                  "metric_name": result.metric_name, "examples": result.eval_examples})
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--score-slices", type=int, default=8)
    parser.add_argument("--full-runs", type=int, nargs="*", default=[], metavar="SEED",
                        help="also whole final-budget LoRA r=8 runs at these seeds, both ways")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.repeats < 1 or args.score_slices < 1:
        parser.error("--steps must be >= 2, --repeats and --score-slices >= 1")
    recipe = recipe_from(args)
    search = Search(recipe, Path(tempfile.mkdtemp()) / "never", progress=False)
    settings = SupernetSettings.parse(recipe.algorithm.settings) if recipe.algorithm.name == "supernet" else None
    sandwich = {**(settings.sandwich() if settings else {"num_random": 2}), "distill": False, "train_largest": False}
    variants = {
        "LoRA r=8": (MixedPetConfig(lora_rank=8, task_type="SEQ_CLS"), Trainer, {}),
        "super-PET": (super_config(search.space), SandwichTrainer, {"supernet": PetSupernet(search.space), **sandwich}),
    }
    step_costs(search, variants["LoRA r=8"][0], 3, Trainer, {}, False)  # warm-up: loading, tokenising, allocation
    times: dict[str, dict[str, list[float]]] = {name: {"random": [], "grouped": []} for name in variants}
    tokens: dict[str, dict[str, list[int]]] = {name: {"random": [], "grouped": []} for name in variants}
    for _ in range(args.repeats):
        for name, (config, trainer, kwargs) in variants.items():
            for sampling in ("random", "grouped"):
                seconds, padded = step_costs(search, config, args.steps, trainer, kwargs, sampling == "grouped")
                times[name][sampling] += seconds
                tokens[name][sampling] += padded
    scoring = scoring_costs(search, args.score_slices)
    runs = full_runs(search, args.full_runs) if args.full_runs else {}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; recipe {args.recipe}; steps: mean of {args.repeats} x {args.steps} per variant; "
          f"scoring: {args.score_slices} slices on {scoring['examples']} examples")
    print("| what | random batches | grouped by length | grouped / random |")
    print("|---|---:|---:|---:|")
    rows = []
    for name in variants:
        mean = {s: statistics.mean(times[name][s]) for s in times[name]}
        padded = {s: statistics.mean(tokens[name][s]) for s in tokens[name]}
        rows.append((f"{name}: step (ms)", 1000 * mean["random"], 1000 * mean["grouped"]))
        rows.append((f"{name}: padded tokens a step", padded["random"], padded["grouped"]))
    rows.append(("scoring a slice (s; split order vs length-sorted)", scoring["s_per_slice"]["split order"],
                 scoring["s_per_slice"]["sorted"]))
    rows.append(("scoring: padded tokens over the split", scoring["padded_tokens"]["split order"],
                 scoring["padded_tokens"]["sorted"]))
    for seed_runs in zip(runs.get("random", []), runs.get("grouped", [])):
        seed = seed_runs[0]["seed"]
        rows.append((f"final-budget LoRA r=8, seed {seed}: wall (s)", seed_runs[0]["wall_time_s"],
                     seed_runs[1]["wall_time_s"]))
        rows.append((f"final-budget LoRA r=8, seed {seed}: {seed_runs[0]['metric_name']} "
                     f"({recipe.evaluation.report_split}, {seed_runs[0]['examples']} examples)",
                     seed_runs[0]["metric"], seed_runs[1]["metric"]))
    for what, random_value, grouped_value in rows:
        print(f"| {what} | {random_value:.4g} | {grouped_value:.4g} | {grouped_value / random_value:.3f} |")
    print(f"scores sorted vs split order: largest difference {scoring['max_score_difference']:.2g}")
    result = {"device": device, "recipe": args.recipe, "steps": args.steps, "repeats": args.repeats,
              "step_times_s": times, "step_padded_tokens": tokens, "scoring": scoring, "full_runs": runs,
              "rows": [{"what": w, "random": r, "grouped": g} for w, r, g in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
