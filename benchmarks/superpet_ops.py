"""How many operations one super-PET training step and one scoring pass dispatch, against a LoRA r=8 step: a CPU
proxy of the GPU's launch-bound regime, for machines without a GPU.

    python benchmarks/superpet_ops.py [--recipe recipes/rotten_tomatoes_supernet.yaml] [--model PATH] \\
        [--students 3] [--score-slices 8] [--repeats 20] [--json OUT.json]

On a GPU, MiniLM's step at batch 16 is bound by kernel launches, not arithmetic (RESULTS.md section 16): its time
follows the number of operations the step dispatches. This counts them with `torch.profiler` (aten operators, the
allocation-only `aten::empty*` left out) for a forward/backward step of: LoRA r=8 on q,v; the super-PET's sandwich
students (the smallest and `--students - 1` random points of the recipe's space, on the labels, as `train_largest:
false` trains them) one pass per student (`training.sandwich.sandwich_losses`) and in one pass
(`batched_sandwich_loss`); `use_rows` alone (switching the slices, no forward); and a scoring forward of
`--score-slices` slices one at a time and side by side. It also times each at a tiny shape (2 examples of 8
tokens, one thread), where the arithmetic is negligible and the time is the per-operation overhead. Ratios to LoRA
r=8 are printed side by side; they are a proxy, not a GPU measurement (section 17 compares them with section 16's
measured GPU ratios).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from peft_autoconfig.search import Search
from peft_autoconfig.search.superpet import super_config
from peft_autoconfig.training.sandwich import batched_sandwich_loss, sandwich_losses
from peft_autoconfig.tuners.slicing import SuperPet, repeat_rows

try:   # as a script (python benchmarks/...) and as a module (tests load it by path, with the repository importable)
    from superpet_steptime import add_recipe_arguments, recipe_from
except ImportError:   # pragma: no cover - the module path
    from benchmarks.superpet_steptime import add_recipe_arguments, recipe_from


def count_ops(step: Callable[[], Any]) -> int:
    """aten operators `step` dispatches (allocations left out)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.count for e in prof.key_averages()
               if e.key.startswith("aten::") and not e.key.startswith("aten::empty"))


def median_time(step: Callable[[], Any], repeats: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(search: Search, students: int, score_slices: int, batch: int, length: int,
          seed: int = 0) -> dict[str, Callable[[], Any]]:
    """The steps to measure, by name, on the recipe's model at the tiny shape."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    def backbone() -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(search.model, num_labels=2)

    space = search.space
    rng = np.random.default_rng(seed)
    lora = get_peft_model(backbone(), LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"],
                                                 task_type="SEQ_CLS"))
    vocab = int(lora.get_base_model().config.vocab_size)
    inputs = {"input_ids": torch.randint(min(100, vocab - 1), vocab, (batch, length)),
              "attention_mask": torch.ones(batch, length, dtype=torch.long),
              "labels": torch.zeros(batch, dtype=torch.long)}
    model = get_peft_model(backbone(), super_config(space))
    superpet = SuperPet(model, space)
    chosen = {"smallest": space.smallest(), **{f"random{i}": space.sample(rng) for i in range(students - 1)}}
    scored = [space.sample(rng) for _ in range(score_slices)]
    features = {k: v for k, v in inputs.items() if k != "labels"}

    def lora_step() -> None:
        lora(**inputs).loss.backward()

    def one_pass_per_student() -> None:
        losses, _ = sandwich_losses(model, superpet, chosen, inputs, distill=False, train_largest=False)
        sum(losses.values()).backward()

    def students_in_one_pass() -> None:
        losses, _ = batched_sandwich_loss(model, superpet, chosen, inputs, train_largest=False)
        sum(losses.values()).backward()

    def switch_only() -> None:
        with superpet.use_rows(list(chosen.values()), batch):
            pass

    @torch.inference_mode()
    def score_alone() -> None:
        for sub in scored:
            with superpet.use(sub):
                model(**features)

    @torch.inference_mode()
    def score_side_by_side() -> None:
        with superpet.use_rows(scored, batch):
            model(**repeat_rows(features, len(scored), batch))

    return {
        "LoRA r=8 q,v step": lora_step,
        f"super-PET step, {students} students one pass each": one_pass_per_student,
        f"super-PET step, {students} students in one pass": students_in_one_pass,
        f"use_rows of {students} students alone (no forward)": switch_only,
        f"scoring {score_slices} slices one at a time": score_alone,
        f"scoring {score_slices} slices side by side": score_side_by_side,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_recipe_arguments(parser)
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--score-slices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2, help="examples per network (tiny: the overhead regime)")
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    recipe = recipe_from(args)
    with tempfile.TemporaryDirectory() as out:
        steps = build(Search(recipe, out), args.students, args.score_slices, args.batch, args.length)
        rows = [{"step": name, "ops": count_ops(step), "seconds": median_time(step, args.repeats)}
                for name, step in steps.items()]
    unit_ops, unit_s = rows[0]["ops"], rows[0]["seconds"]
    print(f"{'step (batch ' + str(args.batch) + ' x ' + str(args.length) + ' tokens per network)':58s} "
          f"{'aten ops':>9s} {'x LoRA':>7s} {'ms':>8s} {'x LoRA':>7s}")
    for row in rows:
        print(f"{row['step']:58s} {row['ops']:9d} {row['ops'] / unit_ops:7.2f} {row['seconds'] * 1e3:8.2f} "
              f"{row['seconds'] / unit_s:7.2f}")
    result = {"recipe": args.recipe, "students": args.students, "score_slices": args.score_slices,
              "batch": args.batch, "length": args.length, "torch": torch.__version__, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
