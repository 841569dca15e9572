"""What one super-PET training step and one slice score cost against a LoRA r=8 step, measured side by side in one
process: the sandwich rule with one forward/backward pass per student (`batched_students: false`) and with all
students in one pass (`true`, `SuperPet.use_rows`), and slices scored one per pass or `--slices-per-pass` at a time.
From these, the `supernet` search's cost in final-budget LoRA r=8 runs (issue 17's unit) for a recipe's settings.

    python benchmarks/superpet_steptime.py [--recipe recipes/rotten_tomatoes_supernet.yaml] [--model PATH] \\
        [--steps 30] [--repeats 2] [--json OUT.json]

Each training variant runs `--steps` optimiser steps `--repeats` times, alternating (A B C A B C), through the
project's runner (the recipe's per-block rates, batch size, max length); the first 3 steps of each run are dropped
(warm-up, allocation) and the medians are compared. Scoring: `--score-slices` random points of the recipe's space on
the whole selection split, alone and side by side. On a CPU the batched variants should not gain (the same
arithmetic in larger passes); on a GPU a small model's step is bound by kernel launches, which they divide.
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

from peft_autoconfig.search import Search, load_recipe
from peft_autoconfig.search.strategies.supernet import SupernetSettings
from peft_autoconfig.search.superpet import PetSupernet, SliceScorer, super_config
from peft_autoconfig.training.runner import RunConfig, run
from peft_autoconfig.training.sandwich import SandwichTrainer
from peft_autoconfig.tuners.mixed import MixedPetConfig
from peft_autoconfig.tuners.slicing import SuperPet

STEP_TIMES: list[float] = []
STEP_TOKENS: list[int] = []


def timed(cls: type[Trainer]) -> type[Trainer]:
    """`cls` whose `training_step` durations go to STEP_TIMES (synchronised on a GPU, so the time is the step's)
    and whose batches' padded token counts go to STEP_TOKENS."""

    class Timed(cls):  # type: ignore[misc, valid-type]
        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            _sync()
            start = time.perf_counter()
            out = super().training_step(model, inputs, *args, **kwargs)
            _sync()
            STEP_TIMES.append(time.perf_counter() - start)
            STEP_TOKENS.append(int(inputs["input_ids"].numel()))
            return out

    Timed.__name__ = f"Timed{cls.__name__}"
    return Timed


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_steps(search: Search, config: MixedPetConfig, steps: int, trainer: type[Trainer],
                trainer_kwargs: dict[str, Any]) -> list[float]:
    """Median-ready step times of `steps` optimiser steps of `config` (the first 3 dropped)."""
    STEP_TIMES.clear()
    training = {k: v for k, v in search.recipe.training.run_kwargs().items() if k not in ("num_epochs", "max_steps")}
    with tempfile.TemporaryDirectory() as out:
        run(RunConfig(
            model_name_or_path=search.model, task=search.recipe.task, peft_config=config, output_dir=out,
            train_subset=steps * int(training.get("batch_size", 16)), max_steps=steps, eval_subset=16,
            show_progress=False, trainer_class=timed(trainer), trainer_kwargs=trainer_kwargs, **training,
        ))
    return STEP_TIMES[3:]


def score_times(search: Search, n: int, slices_per_pass: int, seed: int = 0) -> dict[str, float]:
    """Seconds per slice scored on the whole selection split: alone (one pass per batch per slice) and
    `slices_per_pass` side by side; the two must agree on the scores (checked)."""
    from peft import get_peft_model

    from peft_autoconfig.training.data import load_tokenizer
    from peft_autoconfig.training.model import load_model
    from peft_autoconfig.training.tasks import load_splits, load_task, resolve_num_labels

    task = load_task(search.recipe.task)
    tokenizer = load_tokenizer(search.model)
    base = load_model(search.model, resolve_num_labels(task, load_splits(task)), tokenizer, task.label_names)
    model = get_peft_model(base, super_config(search.space)).eval()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    superpet = SuperPet(model, search.space)
    training = search.recipe.training
    batch_size = 2 * int(getattr(training, "batch_size", None) or 16)
    scorer = SliceScorer.for_task(superpet, search.model, search.recipe.task, search.recipe.evaluation.selection_split,
                                  None, int(getattr(training, "max_length", None) or 128), batch_size)
    rng = np.random.default_rng(seed)
    points = [search.space.sample(rng) for _ in range(n)]
    scorer(points[0])  # warm-up
    _sync()
    start = time.perf_counter()
    alone = [scorer(x) for x in points]
    _sync()
    alone_s = (time.perf_counter() - start) / n
    start = time.perf_counter()
    together = [m for i in range(0, n, slices_per_pass) for m in scorer.score_many(points[i:i + slices_per_pass])]
    _sync()
    together_s = (time.perf_counter() - start) / n
    disagree = max(abs(a - b) for a, b in zip(alone, together))
    if disagree > 2 / sum(len(b["labels"]) for b in scorer.batches):
        raise AssertionError(f"side-by-side scores differ from the scores alone by {disagree}")
    return {"alone_s_per_slice": alone_s, "side_by_side_s_per_slice": together_s, "examples": sum(
        len(b["labels"]) for b in scorer.batches), "max_score_difference": disagree}


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """`--recipe` and `--model`, shared by the super-PET's step benchmarks (this one and superpet_ops.py)."""
    parser.add_argument("--recipe", default="recipes/rotten_tomatoes_supernet.yaml")
    parser.add_argument("--model", help="override the recipe's model (a local path)")


def recipe_from(args: argparse.Namespace) -> Any:
    """The `--recipe`, with `--model` in place of its model when given."""
    recipe = load_recipe(args.recipe)
    return recipe.model_copy(update={"model": args.model}) if args.model else recipe


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--score-slices", type=int, default=16)
    parser.add_argument("--slices-per-pass", type=int, default=8)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)
    if args.steps < 5 or args.repeats < 1:
        parser.error("--steps must be >= 5 and --repeats >= 1")
    recipe = recipe_from(args)
    search = Search(recipe, Path(tempfile.mkdtemp()) / "never", progress=False)
    settings = SupernetSettings.parse(recipe.algorithm.settings)
    sequential = {**settings.sandwich(), "distill": False, "train_largest": False}
    variants = {
        "lora_r8": (MixedPetConfig(lora_rank=8, task_type="SEQ_CLS"), Trainer, {}),
        "super-PET, one pass per student": (super_config(search.space), SandwichTrainer,
                                            {"supernet": PetSupernet(search.space), **sequential}),
        "super-PET, students in one pass": (super_config(search.space), SandwichTrainer,
                                            {"supernet": PetSupernet(search.space), **sequential,
                                             "batched_students": True}),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (config, trainer, kwargs) in variants.items():
            times[name] += train_steps(search, config, args.steps, trainer, kwargs)
    medians = {name: statistics.median(values) for name, values in times.items()}
    scoring = score_times(search, args.score_slices, args.slices_per_pass)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    students = 1 + settings.num_random
    print(f"device: {device}; recipe {args.recipe}; {students} students per step; median of "
          f"{args.repeats} x {args.steps - 3} steps")
    print("| what | median step (ms) | x LoRA r=8 step |")
    print("|---|---:|---:|")
    for name, median in medians.items():
        print(f"| {name} | {1000 * median:.1f} | {median / medians['lora_r8']:.2f} |")
    lora_run = medians["lora_r8"] * 750
    print(f"\nscoring ({scoring['examples']} examples): alone {scoring['alone_s_per_slice']:.3f} s per slice, "
          f"{args.slices_per_pass} side by side {scoring['side_by_side_s_per_slice']:.3f} s per slice "
          f"(x{scoring['alone_s_per_slice'] / scoring['side_by_side_s_per_slice']:.2f}); a final-budget LoRA r=8 "
          f"run's 750 steps = {lora_run:.1f} s of steps here, i.e. "
          f"{lora_run / scoring['side_by_side_s_per_slice']:.0f} slices side by side")
    result = {"device": device, "recipe": args.recipe, "steps": args.steps, "repeats": args.repeats,
              "median_step_s": medians, "step_times_s": times, "scoring": scoring,
              "slices_per_pass": args.slices_per_pass, "students_per_step": students}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
