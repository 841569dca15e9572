"""The search's phases: search (ask -> evaluate -> tell), promotion, baselines, final stage, export.

Determinism and resume come from one rule: the strategy is driven with ask/tell, and every asked point is looked
up in the journal first. A resumed search replays the same asks (same seed, same told objectives, read back
exactly from the journal), so it rebuilds the algorithm's state, skips every finished trial, and evaluates only
what was missing. Outcomes are told in the order asked, so the number of workers and the finishing order do not
change anything (measured objectives such as `wall_time_s` excepted, as they differ between runs).

Fidelity: the search evaluates at `fidelity.levels[0]` on `evaluation.selection_split`. Then, for each next
level, the best `ceil(n / eta)` successful points of the previous level (non-dominated rank, then crowding) are
re-evaluated there. The front is the non-dominated set of the points measured at the last level; baselines are
measured at the last level too. With a `final:` section, every front point and every baseline is then re-trained
at the final budget once per seed and scored on `evaluation.report_split`, selecting nothing further. Final runs
are journaled like trials (keyed by config, budget and seed), and the journal's fingerprint covers only the search
part of the recipe, so changing `final:` reuses every finished search trial.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .baselines import backbone_parameter_count, baseline_configs, encode_points_to_evaluate
from ..front import config_identity, config_to_dict, functional_identity
from .evaluator import evaluate_trial, resolve_evaluator
from .executors import open_executor
from .export import export_front
from .journal import Journal
from .oneshot import OneShotContext, OneShotResult, read_cached_results, resolve_budgets, write_results
from .strategies.oneshot import OneShotStrategy
from .pareto import default_reference_point, hypervolume, promotion_size, select_for_promotion
from .problem import SearchProblem
from .recipe import Recipe, resolve_model
from .space import SearchSpace
from .strategies import make_strategy
from .trial import FAILED_F, RunningFront, TrialRecord, TrialRequest, build_record

Evaluate = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class SearchResult:
    out_dir: Path
    document: dict[str, Any]
    n_trials: int
    n_evaluated: int
    """Trials evaluated by this invocation (the rest came from the journal)."""
    front: list[dict[str, Any]]
    """The point dicts given to `write_front` (journal fields plus `selection` and `report`)."""


def _config_key(config: Optional[dict[str, Any]]) -> str:
    """A config's part of a journal key: its canonical identity (`front.config_identity`), stable when a later
    version adds config fields."""
    return config_identity(config)


class Search:
    """One search of `recipe` into `out_dir` (see the module docstring). `run()` does everything.

    `evaluate` replaces the recipe's evaluator with an in-process function (the Python API, `api.search_peft`);
    `model_config` gives the model's config instead of reading it from `recipe.model`; `retry_failed` re-runs the
    journal's failed trials instead of reusing them.
    """

    def __init__(
        self,
        recipe: Recipe,
        out_dir: str | Path,
        *,
        workers: int = 1,
        scheduler: str | None = None,
        processes: bool = True,
        progress: bool = True,
        retry_failed: bool = False,
        evaluate: Evaluate | None = None,
        model_config: Any = None,
        task_type: str = "SEQ_CLS",
    ) -> None:
        self.recipe = recipe
        self.out_dir = Path(out_dir)
        self.workers, self.scheduler, self.processes, self.progress = workers, scheduler, processes, progress
        self.retry_failed = retry_failed
        if evaluate is not None and (workers > 1 or scheduler is not None):
            raise ValueError("an in-process `evaluate` function runs trials sequentially; use workers=1.")
        self.evaluate = evaluate
        # everything that can be wrong with the recipe fails here, before any training
        self.model = recipe.model if model_config is not None else resolve_model(recipe.model)
        try:
            self.space = (
                SearchSpace(model_config, recipe.space, task_type) if model_config is not None
                else SearchSpace.from_pretrained(self.model, recipe.space, task_type)
            )
        except OSError as error:
            raise ValueError(f"recipe field `model`: cannot load the config of {recipe.model!r}: {error}") from None
        if evaluate is None:
            resolve_evaluator(recipe.evaluator)
        if evaluate is None and recipe.evaluator is None:
            from ..training.tasks import load_task

            try:
                load_task(recipe.task)
            except (TypeError, ValueError) as error:
                raise ValueError(f"recipe field `task`: {error}") from None
        self.baselines = baseline_configs(recipe.baselines, self.space)
        self.initial_points = encode_points_to_evaluate(recipe.algorithm.points_to_evaluate or [], self.space)
        self.objectives = list(recipe.objectives)
        self.max_parameters = self.space.max_cost()
        self.levels = recipe.fidelity_levels
        algorithm = recipe.algorithm
        self.strategy = make_strategy(algorithm.name, algorithm.pop_size, self.space.repair, **algorithm.options())
        self.one_shot = isinstance(self.strategy, OneShotStrategy)
        self.budgets: list[int] = []
        if recipe.budgets is not None:
            self.budgets = resolve_budgets(recipe.budgets, backbone_parameter_count(self.space.model_config), self.max_parameters)
        if self.one_shot:
            self.strategy.check(self.space, self.budgets)
        self.oneshot_time_s = 0.0
        self.strategy_time: dict[str, Any] | None = None
        self.journal: Journal | None = None
        self.n_evaluated = 0
        self._next_id = 0
        self._journal_ids: set[int] = set()
        self._metric_name = "metric"
        self._bar = None
        self._front = RunningFront(len(self.objectives))
        self._best: float | None = None

    # -- requests -------------------------------------------------------------------------------------------------
    def _request(
        self, kind: str, key: str, x: dict | None, config: dict | None, level: int, fidelity: dict, *,
        name: str | None = None, seed: int | None = None, split: str | None = None, init_adapter: str | None = None,
    ) -> TrialRequest:
        cached = self.journal.get(key)
        if cached is not None:
            trial_id = cached.trial_id
        else:
            # the next id in request order (what an uninterrupted run gives), skipping ids the journal already holds
            # for other trials (a later recipe's final runs, a side study): ids stay unique in a journal
            trial_id = self._next_id
            while trial_id in self._journal_ids:
                trial_id += 1
            self._journal_ids.add(trial_id)
        self._next_id = max(self._next_id, trial_id + 1)
        return TrialRequest(
            trial_id=trial_id, key=key, kind=kind, name=name, x=x, config=config, level=level, fidelity=dict(fidelity),
            model=self.model, task=self.recipe.task, training=self.recipe.training.run_kwargs(),
            eval_split=split or self.recipe.evaluation.selection_split, eval_subset=self.recipe.evaluation.eval_subset,
            seed=self.recipe.seed if seed is None else seed, evaluator=self.recipe.evaluator, init_adapter=init_adapter,
        )

    def _fidelity_key(self, level: int) -> str:
        return json.dumps(self.levels[level], sort_keys=True)

    def _point_request(self, kind: str, x: dict, level: int) -> TrialRequest:
        key = f"{self._fidelity_key(level)}|{self.space.key(x)}"
        return self._request(kind, key, x, config_to_dict(self.space.decode(x)), level, self.levels[level])

    def _parameters(self, request: TrialRequest) -> int | None:
        if request.x is not None:
            return self.space.cost(request.x)
        return self.baselines.analytic_parameters(request.config)

    # -- evaluation -----------------------------------------------------------------------------------------------
    def _evaluate(self, executor: Any, requests: list[TrialRequest]) -> list[TrialRecord]:
        """Records of `requests` in order: from the journal when finished before, else evaluated and journaled."""
        todo: list[TrialRequest] = []
        for request in requests:
            cached = self.journal.get(request.key)
            if cached is not None and (cached.ok or not self.retry_failed):
                self._tick(cached)
            elif request.key not in {r.key for r in todo}:  # a point asked twice in one batch is evaluated once
                todo.append(request)

        def on_done(j: int, outcome: dict) -> None:
            request = todo[j]
            record = build_record(request, outcome, objectives=self.objectives,
                                  analytic_parameters=self._parameters(request), metric_name=self._metric_name)
            record = self.journal.add(record)
            self.n_evaluated += 1
            self._tick(record)

        if todo:
            function = evaluate_trial if self.evaluate is None else _InProcess(self.evaluate)
            executor.map(function, [r.to_dict() for r in todo], on_done)
        return [self.journal.get(r.key) for r in requests]

    def _tick(self, record: TrialRecord) -> None:
        if record.ok:
            self._metric_name = record.metric_name
            if record.kind in ("search", "promotion"):
                self._front.add(record.F)
                self._best = record.metric if self._best is None else max(self._best, record.metric)
        if self._bar is None:
            return
        self._bar.update(1)
        if self._front.points:
            ref = self.recipe.reference_point or default_reference_point(
                self.objectives, self.max_parameters, np.array([self._front.worst])
            )
            hv = hypervolume(np.array(self._front.points), ref)
            self._bar.set_postfix({f"best {self._metric_name}": f"{self._best:.4f}", "HV": f"{hv:.4g}"})

    # -- phases ---------------------------------------------------------------------------------------------------
    def _search_phase(self, executor: Any) -> list[TrialRecord]:
        problem = SearchProblem(self.space, self.objectives)
        strategy = self.strategy
        strategy.setup(problem, seed=self.recipe.seed, initial_points=self.initial_points)
        records: list[TrialRecord] = []
        n_trials = self.recipe.algorithm.n_trials
        batches: list[dict[str, Any]] = []
        phase_start = time.perf_counter()
        while len(records) < n_trials:
            start = time.perf_counter()
            points = strategy.ask()[: n_trials - len(records)]
            ask_s = time.perf_counter() - start
            if not points:
                break
            batch = self._evaluate(executor, [self._point_request("search", x, 0) for x in points])
            start = time.perf_counter()
            strategy.tell(points, np.array([r.F for r in batch], dtype=float))
            batches.append({"n_points": len(points), "ask_s": ask_s, "tell_s": time.perf_counter() - start})
            records.extend(batch)
        self.strategy_time = _strategy_time(batches, strategy.diagnostics(), time.perf_counter() - phase_start,
                                            sum(r.wall_time_s for r in records))
        return records

    def _promotion_phase(self, executor: Any, records: list[TrialRecord]) -> list[TrialRecord]:
        """Successive halving over the fidelity levels; returns the records measured at the last level."""
        current = _unique_ok(records)
        for level in range(1, len(self.levels)):
            if not current:
                break
            chosen = select_for_promotion(np.array([r.F for r in current]), promotion_size(len(current), self.recipe.fidelity.eta))
            current = _unique_ok(self._evaluate(executor, [self._point_request("promotion", current[i].x, level) for i in chosen]))
        return current

    def _oneshot_phase(self, executor: Any) -> list[TrialRecord]:
        """A one-shot strategy's `search` (cached in oneshot.json), then each configuration it returns re-trained
        from scratch at the last fidelity level on the selection split; returns those records (the front's pool)."""
        fingerprint = self.recipe.fingerprint()
        cached = read_cached_results(self.out_dir, fingerprint, self.budgets)
        if cached is not None:
            results, self.oneshot_time_s = cached
        else:
            context = OneShotContext(
                model=self.model, task=self.recipe.task, space=self.space, training=self.recipe.training.run_kwargs(),
                fidelity=dict(self.levels[0]), selection_split=self.recipe.evaluation.selection_split,
                eval_subset=self.recipe.evaluation.eval_subset, seed=self.recipe.seed, budgets=list(self.budgets),
                work_dir=self.out_dir / "oneshot", progress=self.progress,
            )
            context.work_dir.mkdir(parents=True, exist_ok=True)
            self.strategy.setup(SearchProblem(self.space, self.objectives), seed=self.recipe.seed)
            start = time.perf_counter()
            results = self.strategy.search(context)
            self.oneshot_time_s = time.perf_counter() - start
            if not results:
                raise RuntimeError(f"algorithm {self.recipe.algorithm.name!r} returned no configuration.")
            write_results(self.out_dir, fingerprint, self.budgets, results, self.oneshot_time_s, self.recipe.algorithm.name)
        if not self.strategy.retrains_front():
            return self._oneshot_scores(results)
        level = len(self.levels) - 1
        requests, seen = [], set()
        for i, result in enumerate(results):
            # a warm start (the method's own weights of this configuration) is another run than a cold one
            init = result.details.get("init_adapter")
            key = f"oneshot|{_config_key(result.config)}|{self._fidelity_key(level)}" + (f"|init={init}" if init else "")
            if key in seen:  # two budgets may give the same configuration: train it once
                continue
            seen.add(key)
            name = f"budget={result.budget}" if result.budget is not None else f"oneshot:{i}"
            requests.append(self._request("search", key, None, result.config, level, self.levels[level], name=name,
                                          init_adapter=init))
        if self._bar is not None:
            self._bar.total = len(requests) + (len(self.baselines.configs) if self.recipe.final is None else 0)
        return _unique_ok(self._evaluate(executor, requests))

    def _oneshot_scores(self, results: list[OneShotResult]) -> list[TrialRecord]:
        """The one-shot method's own scores as journaled trials (fidelity `oneshot_score`, nothing trained: their
        time is the one-shot stage's), the front's pool when it is not re-trained before the final stage."""
        algorithm = self.recipe.algorithm.name
        if self._bar is not None:
            self._bar.total = len(results)   # `retrain: false` needs `final:`, whose phase adds its own runs
        records = []
        for i, result in enumerate(results):
            if result.score is None:
                raise RuntimeError(f"algorithm {algorithm!r} returned configuration {i} without a score; "
                                   "`algorithm.settings.retrain: false` needs the method's own scores.")
            request = self._request("search", f"oneshot_score|{_config_key(result.config)}", None, result.config, 0,
                                    {"oneshot_score": algorithm}, name=f"oneshot:{i}")
            record = self.journal.get(request.key)
            if record is None:
                outcome = {"status": "ok", "metric": result.score, "wall_time_s": 0.0,
                           "metric_name": result.details.get("metric_name"),
                           "eval_examples": result.details.get("eval_examples")}
                record = self.journal.add(build_record(request, outcome, objectives=self.objectives,
                                                       analytic_parameters=result.trainable_parameters,
                                                       metric_name=self._metric_name))
            self._tick(record)
            records.append(record)
        return _unique_ok(records)

    def _baseline_phase(self, executor: Any) -> list[TrialRecord]:
        level = len(self.levels) - 1
        requests = [
            self._request("baseline", f"baseline:{name}|{_config_key(config)}|{self._fidelity_key(level)}", None, config,
                          level, self.levels[level], name=name)
            for name, config in self.baselines.configs.items()
        ]
        return _unique_ok(self._evaluate(executor, requests)) if requests else []

    def _final_phase(self, executor: Any, configs: dict[str, dict | None]) -> dict[str, list[TrialRecord]]:
        """Each config (by name) re-trained at the final budget once per seed, scored on the report split."""
        final = self.recipe.final
        budget = final.budget()
        # seed-major order: an interrupted final stage has every config's first seed before any second seed
        requests = [
            self._request("final", f"final:{_config_key(config)}|{json.dumps(budget, sort_keys=True)}|seed={seed}",
                          None, config, -1, budget, name=name, seed=seed, split=self.recipe.evaluation.report_split)
            for seed in final.seed_list(self.recipe.seed) for name, config in configs.items()
        ]
        if self._bar is not None:
            self._bar.total += len(requests)
        twins = self._final_twins(requests, budget)
        self._evaluate(executor, [q for q in requests if q.key not in twins])
        for request in requests:   # a twin shares its source's run, recorded under its own name and key
            source = self.journal.get(twins[request.key]) if request.key in twins else None
            if source is not None and self.journal.get(request.key) is None:
                self._tick(self.journal.add(dataclasses.replace(
                    source, trial_id=request.trial_id, key=request.key, name=request.name, config=request.config,
                    wall_time_s=0.0, same_run_as=source.trial_id)))
        records = [self.journal.get(q.key) for q in requests]
        return {name: [r for q, r in zip(requests, records) if q.name == name] for name in configs}

    def _final_twins(self, requests: list[TrialRequest], budget: dict[str, Any]) -> dict[str, str]:
        """{key of a final request not in the journal: key of the run it shares}: a config that trains the same
        function (`functional_identity`, e.g. a front point that is the LoRA r=8 hand design against the `lora_r8`
        baseline, written with other irrelevant fields) at the same budget and seed is trained once. Earlier
        journaled final runs count first, then the first such request of this batch."""
        def identity(config: dict | None, seed: int) -> str:
            targets = list(self.space.arch.default_lora_targets)
            return f"{functional_identity(config, targets, self.space.num_layers)}|seed={seed}"

        split = self.recipe.evaluation.report_split
        sources = {identity(r.config, r.seed): r.key for r in self.journal if r.kind == "final" and r.ok
                   and r.same_run_as is None and r.fidelity == budget and r.eval_split == split}
        twins = {}
        for request in requests:
            if self.journal.get(request.key) is not None:
                continue
            source = sources.setdefault(identity(request.config, request.seed), request.key)
            if source != request.key:
                twins[request.key] = source
        return twins

    def _final_limit(self) -> int | None:
        """`final.max_parameters` as a count (None: every front point is re-trained)."""
        limit = self.recipe.final.max_parameters
        if isinstance(limit, str):
            return int(float(limit.strip()[:-1]) / 100.0 * backbone_parameter_count(self.space.model_config))
        return limit

    def expected_trials(self) -> int:
        if self.one_shot:  # corrected once the one-shot stage has returned its configurations
            return max(1, len(self.budgets)) + (len(self.baselines.configs) if self.recipe.final is None else 0)
        n = total = self.recipe.algorithm.n_trials
        for _ in range(1, len(self.levels)):
            n = promotion_size(n, self.recipe.fidelity.eta)
            total += n
        return total + (len(self.baselines.configs) if self.recipe.final is None else 0)

    def _open_journal(self) -> None:
        from ..training.optim import resolve_learning_rates

        rates = resolve_learning_rates(self.recipe.training.learning_rates or None, self.recipe.training.learning_rate)
        self.journal = Journal(self.out_dir / "journal.jsonl", self.recipe.fingerprint(), self.recipe.raw, rates,
                               self.recipe.training.adapter_width_scaling)
        self._journal_ids = {record.trial_id for record in self.journal}

    def evaluate_points(self, points: list[dict[str, Any]], level: int) -> list[TrialRecord]:
        """Each point trained at fidelity `level` on the selection split, journaled in `out_dir` (resumable; points
        already measured there are not trained again). For studies outside the search, such as the ranking of the
        low fidelity on every searched point (`benchmarks/search_quality.py --rank-all`)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._open_journal()
        with open_executor(self.workers, self.scheduler, self.processes) as executor:
            return self._evaluate(executor, [self._point_request("promotion", self.space.canonical(x), level) for x in points])

    def run(self) -> SearchResult:
        start = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._open_journal()
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.expected_trials(), desc="trials", unit="trial", dynamic_ncols=True)
        try:
            with open_executor(self.workers, self.scheduler, self.processes) as executor:
                if self.one_shot:
                    last = self._oneshot_phase(executor)
                else:
                    searched = self._search_phase(executor)
                    last = self._promotion_phase(executor, searched) if len(self.levels) > 1 else _unique_ok(searched)
                # with a final stage, baselines are trained there only (same protocol as the front), not at the
                # last fidelity level too
                baselines = self._baseline_phase(executor) if self.recipe.final is None else []
                # a budgeted one-shot search returns one configuration per budget: all of them are the front
                front = sorted(last, key=lambda r: (r.trainable_parameters, r.trial_id)) if self.one_shot and self.budgets else _front(last)
                finals: dict[str, list[TrialRecord]] = {}
                if self.recipe.final is not None:
                    limit = self._final_limit()
                    configs = {f"trial:{r.trial_id}": r.config for r in front if limit is None or r.trainable_parameters <= limit}
                    configs.update(self.baselines.configs)
                    finals = self._final_phase(executor, configs)
        finally:
            if self._bar is not None:
                self._bar.close()
        document, points = export_front(
            self.out_dir, self.recipe, self.space, self.model, front=front, baselines=baselines, finals=finals,
            trials=list(self.journal), last_level=last, wall_time=time.perf_counter() - start,
            oneshot_time_s=self.oneshot_time_s if self.one_shot else None, strategy_time=self.strategy_time,
        )
        return SearchResult(self.out_dir, document, len(self.journal), self.n_evaluated, points)


class _InProcess:
    """`evaluate_trial` over a user's function (the Python API's in-process evaluator)."""

    def __init__(self, function: Evaluate) -> None:
        self.function = function

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return evaluate_trial(request, self.function)


def _strategy_time(batches: list[dict[str, Any]], diagnostics: list[dict[str, Any]], phase_s: float,
                   trials_s: float) -> dict[str, Any]:
    """The strategy's own time in the search phase (ask + tell per batch, with its diagnostics merged in), and its
    share of the trials' training time and of the phase's wall time. Measured in this invocation: a resumed search
    replays every ask, so the strategy's time is real, while the trials it finds in the journal cost nothing."""
    for batch, extra in zip(batches, diagnostics):
        batch.update(extra)
    total = sum(b["ask_s"] + b["tell_s"] for b in batches)
    return {"batches": batches, "total_s": total, "phase_wall_s": phase_s,
            "share_of_phase": total / phase_s if phase_s > 0 else None,
            "share_of_trials": total / (total + trials_s) if total + trials_s > 0 else None}


def _unique_ok(records: list[TrialRecord]) -> list[TrialRecord]:
    seen, out = set(), []
    for r in records:
        if r.ok and r.key not in seen:
            seen.add(r.key)
            out.append(r)
    return out


def _front(records: list[TrialRecord]) -> list[TrialRecord]:
    """The non-dominated records, fewest parameters first."""
    from .pareto import non_dominated

    F = np.array([r.F for r in records]) if records else np.zeros((0, 2))
    front = [records[i] for i in non_dominated(F)]
    return sorted(front, key=lambda r: (r.trainable_parameters, -r.metric, r.trial_id))


def run_search(recipe: Recipe, out_dir: str | Path, **kwargs: Any) -> SearchResult:
    """Run (or resume) the search of `recipe` into `out_dir`; see `Search` for the keyword arguments."""
    return Search(recipe, out_dir, **kwargs).run()


__all__ = ["FAILED_F", "Search", "SearchResult", "run_search"]
