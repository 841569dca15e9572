"""`algorithm.name: supernet`: train one weight-sharing super-PET, search its slices by inference only.

Two-stage weight-sharing NAS (Klein et al.; OFA; HAT) applied to the mixed composite: the super-PET (the space's
largest configuration, `search.superpet`) is trained once with the sandwich rule at the first fidelity level; then
an ask/tell strategy (`settings.inner`, NSGA-II by default) explores the space for `settings.inner_trials` points,
each scored on its slice of the super-PET on the selection split (no training), against its analytic parameter
count. The inner front (at most `settings.max_results` points, spread by crowding distance) is returned; the driver
re-trains each configuration stand-alone and the search ends as every other, or, with `settings.retrain: false`,
takes the slices' scores as the front's selection values and sends the front straight to the recipe's final stage
(the issue's two-stage NAS: the super-PET's front re-trained stand-alone at the user's budget, nothing in between).

Files in `<out>/oneshot/`: `superpet/` (the trained super-PET: a peft adapter folder plus `superpet.json`),
`inner.jsonl` (one line per scored point, so a resumed inner search re-scores nothing), `supernet.json` (timings),
and with `warm_start_from_slice` `slices/<i>/`, each returned configuration's sliced weights as an adapter folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

from ...front import config_to_dict
from ..oneshot import OneShotContext, OneShotResult
from .oneshot import OneShotStrategy
from ..pareto import non_dominated, select_for_promotion
from ..problem import SearchProblem
from ..schema import RecipeModel
from ..space import SearchSpace
from .base import check_algorithm, make_strategy, register_strategy


class SupernetSettings(RecipeModel):
    """`algorithm.settings` of `supernet`.

    Args:
        inner: the ask/tell strategy searching the slices (`nsga2`, `random`, `mobo`).
        inner_trials: points it scores on the super-PET (inference only: thousands are affordable).
        inner_pop_size: its batch / population size.
        max_results: at most this many inner-front points are returned for stand-alone re-training (the most
            spread ones by crowding distance, the extremes kept).
        num_random: random sub-configurations per sandwich step (besides the largest and the smallest).
        distill: in-place distillation of the students from the largest (else they train on the labels).
        temperature: distillation temperature.
        train_largest: the sandwich rule's largest configuration trains every step (default). `false` trains only
            the smallest and `num_random` random slices, on the labels (needs `distill: false`): at the per-block
            rates the largest configuration (every block at its largest size in every layer) does not train, and a
            shared head fitted to it leaves the small slices at the majority class (RESULTS.md section 13). The
            super-PET's metric in `superpet.json` is still the largest configuration's, now never trained as such.
        largest_only_fraction: the first fraction of the super-PET's steps trains the largest configuration alone,
            so that the students are distilled from a trained teacher rather than an untrained one (DynaBERT's
            order; the backbone's `supernet.rewire.after`); 0 (default) starts the sandwich at the first step.
        batched_students: run each sandwich step's slices in one forward pass over the batch repeated once per slice
            (`SuperPet.use_rows`; needs `distill: false`): the same loss and gradients as one pass per slice, and on
            a GPU, where MiniLM's step is bound by kernel launches, half the step time for 3 students (RESULTS.md
            section 16); slower on a CPU. Default (null): on when a CUDA device is present and `distill` is false.
            Not part of the super-PET's identity (a super-PET trained either way is reused by the other).
        learning_rate_scale: multiplies every per-block learning rate while the super-PET trains (the largest
            configuration, trained every step, may diverge at rates chosen for single sizes; RESULTS.md section 9).
        num_epochs: epochs the super-PET trains on the first fidelity level's training subset (the level's
            `max_steps` ignored); default the first level's own budget. One super-PET stands for every trial of the
            search, so it may afford more training than one trial; after one shared epoch a slice's score mostly
            measures how fast it learns (RESULTS.md section 13c).
        score_subset: score the slices on this many examples of the selection split (a fixed subset); default
            `evaluation.eval_subset`. The driver's stand-alone re-training still scores on `evaluation.eval_subset`.
        eval_batch_size: batch size of the scoring passes (default twice `training.batch_size`).
        min_score: slices whose super-PET score is below this are not returned (default: none left out); e.g.
            just above the majority class's accuracy, so that the front's cheapest point is not a slice that does
            not learn (RESULTS.md section 16: a third of the re-training went to one).
        slices_per_pass: score this many slices side by side in each scoring pass (`SliceScorer.score_many`: the
            batch repeated once per slice); the same scores, fewer passes (a GPU's gain, not a CPU's). Default
            (null): 8 with a CUDA device, else 1.
        superpet: a super-PET folder to reuse instead of training one (it must be of the same model and contain the
            space; its own training settings are taken as they are).
        warm_start_from_slice: also save each returned configuration's sliced weights (`slices/<i>/`, named in
            the result's `details.init_adapter`) for a re-training that starts from them; see docs/search.md.
        retrain: re-train each returned configuration stand-alone at the last fidelity level and choose the front
            on those runs (default). `false` chooses it on the slices' own scores (journaled as trials of fidelity
            `oneshot_score`, with their standard errors) and sends it straight to the final stage, which must exist
            (`final:`): the search then costs the super-PET and its scoring only (the re-training was 0.9 of 3.3
            final-budget LoRA runs on the H100, RESULTS.md section 16), but on MiniLM such a front was weaker than
            a re-trained one (section 17a). Not part of the recipe's fingerprint: switching it resumes the same
            `--out`.
    """

    where: ClassVar[tuple[str, ...]] = ("algorithm", "settings")
    not_in_fingerprint: ClassVar[tuple[str, ...]] = ("batched_students", "slices_per_pass", "retrain")
    """Fields that change no trial's result (how the super-PET's passes are batched; whether its front is re-trained
    before the final stage, whose trials are keyed apart): switching them resumes the same journal."""

    inner: str = "nsga2"
    inner_trials: int = Field(500, strict=True, ge=1)
    inner_pop_size: int = Field(32, strict=True, ge=2)
    max_results: int = Field(8, strict=True, ge=1)
    num_random: int = Field(2, strict=True, ge=0)
    distill: bool = True
    temperature: float = Field(1.0, gt=0)
    largest_only_fraction: float = Field(0.0, ge=0, lt=1)
    train_largest: bool = True
    batched_students: Optional[bool] = None
    learning_rate_scale: float = Field(1.0, gt=0, le=1)
    num_epochs: Optional[float] = Field(None, gt=0)
    score_subset: Optional[int] = Field(None, strict=True, ge=1)
    eval_batch_size: Optional[int] = Field(None, strict=True, ge=1)
    slices_per_pass: Optional[int] = Field(None, strict=True, ge=1)
    min_score: Optional[float] = None
    superpet: Optional[str] = Field(None, min_length=1)
    warm_start_from_slice: bool = False
    retrain: bool = True

    def sandwich(self) -> dict[str, Any]:
        """The `SandwichTrainer` arguments these settings give (also the super-PET's identity in its manifest: the
        newer fields are left out at their defaults, so super-PETs trained before they existed are still reused)."""
        sandwich: dict[str, Any] = {"num_random": self.num_random, "temperature": self.temperature,
                                    "distill": self.distill}
        if self.largest_only_fraction:
            sandwich["largest_only_fraction"] = self.largest_only_fraction
        if not self.train_largest:
            sandwich["train_largest"] = False
        return sandwich

    def students_in_one_pass(self) -> bool:
        """`batched_students` resolved: as set, or (null) on with a CUDA device when the students are not distilled."""
        if self.batched_students is not None:
            return self.batched_students
        return not self.distill and _cuda()

    def scoring_slices_per_pass(self) -> int:
        """`slices_per_pass` resolved: as set, or (null) 8 with a CUDA device, else 1."""
        return self.slices_per_pass or (8 if _cuda() else 1)

    @model_validator(mode="after")
    def _students_only_train_on_labels(self) -> "SupernetSettings":
        if not self.train_largest and (self.distill or self.largest_only_fraction):
            raise ValueError("`algorithm.settings.train_largest: false` trains the slices on the labels, without "
                             "the largest as a teacher: set `distill: false` and `largest_only_fraction: 0`.")
        if self.warm_start_from_slice and not self.retrain:
            raise ValueError("`algorithm.settings.warm_start_from_slice: true` starts the last-level re-training from "
                             "the slices, which `retrain: false` skips (the final stage stays cold): set one of them "
                             "back.")
        if self.batched_students and self.distill:
            raise ValueError("`algorithm.settings.batched_students: true` trains every slice on the labels in one "
                             "pass: set `distill: false`.")
        return self

    def check_recipe(self, recipe: Any) -> None:
        """Checks against the rest of the recipe (`Recipe` calls it when it loads): `retrain: false` chooses the
        front on the super-PET's scores, which measure the metric only, and leaves the stand-alone check to the final
        stage."""
        if self.retrain:
            return
        if recipe.final is None:
            raise ValueError(
                "recipe field `algorithm.settings.retrain`: false chooses the front on the super-PET's own scores and "
                "re-trains it only in the final stage; add a `final:` section (e.g. `final: {num_epochs: 3}`) or set "
                "`retrain: true`"
            )
        if set(recipe.objectives) != {"metric", "trainable_parameters"}:
            raise ValueError(
                f"recipe field `algorithm.settings.retrain`: false needs `objectives: [metric, trainable_parameters]` "
                f"(the super-PET's scores measure nothing else), got {recipe.objectives}"
            )

    @field_validator("inner")
    @classmethod
    def _ask_tell(cls, name: str) -> str:
        return check_algorithm(name, ask_tell=True)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def inner_search(
    space: SearchSpace, score: Callable[[dict[str, Any]], float], log: Path, *, inner: str, n_trials: int,
    pop_size: int, seed: int, progress: bool = True, slices_per_pass: int = 1,
) -> list[dict[str, Any]]:
    """Drive `inner` over `space` for `n_trials` asked points, each scored by `score(x)` (the metric, maximised)
    against `space.cost(x)`; every distinct point is scored once and logged to `log` (JSON lines), whose lines a
    resumed search reuses. With `slices_per_pass` > 1 the new points of a batch are scored that many at a time by
    `score.score_many` (each logged with its share of the time). Returns the log's entries of the asked points,
    distinct, in order."""
    from tqdm.auto import tqdm

    done: dict[str, dict[str, Any]] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                done[entry["key"]] = entry
    strategy = make_strategy(inner, pop_size, space.repair)
    strategy.setup(SearchProblem(space, ["metric", "trainable_parameters"]), seed=seed)
    asked: dict[str, dict[str, Any]] = {}
    count = 0
    bar = tqdm(total=n_trials, desc="super-PET slices", unit="point", disable=not progress)
    with open(log, "a") as handle, bar:
        while count < n_trials:
            points = strategy.ask()[: n_trials - count]
            if not points:
                break
            new = list({space.key(x): x for x in points if space.key(x) not in done}.items())
            for start_at in range(0, len(new), slices_per_pass):
                chunk = new[start_at:start_at + slices_per_pass]
                start = time.perf_counter()
                metrics = [score(x) for _, x in chunk] if slices_per_pass == 1 else score.score_many(
                    [x for _, x in chunk])
                seconds = (time.perf_counter() - start) / len(chunk)
                for (key, x), metric in zip(chunk, metrics):
                    done[key] = {"key": key, "x": space.canonical(x), "metric": metric,
                                 "trainable_parameters": space.cost(x), "wall_time_s": seconds}
                    handle.write(json.dumps(done[key]) + "\n")
                handle.flush()
            F = []
            for x in points:
                key = space.key(x)
                asked.setdefault(key, done[key])
                F.append([-done[key]["metric"], done[key]["trainable_parameters"]])
            strategy.tell(points, np.array(F, dtype=float))
            count += len(points)
            bar.update(len(points))
            bar.set_postfix(best=f"{max(e['metric'] for e in asked.values()):.4f}", scored=len(asked))
    return list(asked.values())


def inner_front(entries: list[dict[str, Any]], max_results: int,
                min_score: Optional[float] = None) -> list[dict[str, Any]]:
    """The non-dominated entries (metric up, parameters down), at most `max_results` spread ones, smallest first.
    With `min_score`, entries scoring below it are left out first (a slice at the majority class is the cheapest
    point of every front, and re-training it stand-alone is wasted); none left is an error naming the field."""
    if min_score is not None:
        kept = [e for e in entries if e["metric"] >= min_score]
        if not kept:
            best = max((e["metric"] for e in entries), default=None)
            raise ValueError(f"`algorithm.settings.min_score` = {min_score}: no slice of the {len(entries)} scored "
                             f"reaches it (best {best}).")
        entries = kept
    F = np.array([[-e["metric"], e["trainable_parameters"]] for e in entries], dtype=float).reshape(-1, 2)
    front = [entries[i] for i in non_dominated(F)]
    if len(front) > max_results:
        chosen = select_for_promotion(np.array([[-e["metric"], e["trainable_parameters"]] for e in front]), max_results)
        front = [front[i] for i in chosen]
    return sorted(front, key=lambda e: (e["trainable_parameters"], -e["metric"]))


@register_strategy
class SupernetStrategy(OneShotStrategy):
    """Weight-sharing super-PET search (see the module docstring)."""

    name = "supernet"
    budgeted = False
    settings_model = SupernetSettings

    def retrains_front(self) -> bool:
        return self.settings.retrain

    def search(self, context: OneShotContext) -> list[OneShotResult]:
        from ..superpet import SliceScorer, load_superpet, save_slice, train_superpet

        settings: SupernetSettings = self.settings
        work_dir = Path(context.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if settings.superpet is None:
            directory = work_dir / "superpet"
            manifest = train_superpet(context, settings.sandwich(), directory, settings.learning_rate_scale,
                                      settings.num_epochs, settings.students_in_one_pass())
        else:
            directory = Path(settings.superpet)
            manifest = None
        trained = time.perf_counter()
        superpet = load_superpet(directory, context.model, context.task, context.space)
        batch_size = settings.eval_batch_size or 2 * int(context.training.get("batch_size", 16))
        scorer = SliceScorer.for_task(superpet, context.model, context.task, context.selection_split,
                                      settings.score_subset or context.eval_subset,
                                      int(context.training.get("max_length", 128)), batch_size)
        entries = inner_search(context.space, scorer, work_dir / "inner.jsonl", inner=settings.inner,
                               n_trials=settings.inner_trials, pop_size=settings.inner_pop_size, seed=context.seed,
                               progress=context.progress, slices_per_pass=settings.scoring_slices_per_pass())
        front = inner_front(entries, settings.max_results, settings.min_score)
        scored = time.perf_counter()
        results = []
        for i, entry in enumerate(front):
            config = context.space.decode(entry["x"])
            details: dict[str, Any] = {"x": entry["x"], "superpet_metric": entry["metric"],
                                       "metric_name": scorer.metric_name, "eval_examples": scorer.n_examples}
            if settings.warm_start_from_slice:
                path = save_slice(superpet, config, context.model, context.task, work_dir / "slices" / str(i))
                details["init_adapter"] = str(path)
            results.append(OneShotResult(config=config_to_dict(config), score=entry["metric"], details=details,
                                         trainable_parameters=entry["trainable_parameters"]))
        summary = {
            "superpet": str(directory), "superpet_training_s": trained - start, "scoring_s": scored - trained,
            "n_scored": len(entries), "n_front": len(front), "metric_name": scorer.metric_name,
            "superpet_metric": None if manifest is None else manifest.get("metric"),
            "batched_students": settings.students_in_one_pass(), "slices_per_pass": settings.scoring_slices_per_pass(),
        }
        (work_dir / "supernet.json").write_text(json.dumps(summary, indent=2) + "\n")
        return results
