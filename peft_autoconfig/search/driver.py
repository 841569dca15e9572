"""The search loop: ask -> evaluate (journal, inline or Dask) -> tell; then successive-halving promotion; export.

Determinism and resume come from one rule: the strategy is driven with ask/tell, and every asked point is looked
up in the journal first. A resumed search replays the same asks (same seed, same told objectives, read back
exactly from the journal), so it rebuilds the algorithm's state, skips every finished trial, and evaluates only
what was missing. Outcomes are told in the order asked, so the number of workers and the finishing order do not
change anything (measured objectives such as `wall_time_s` excepted, as they differ between runs).

Fidelity: the search evaluates at `fidelity.levels[0]`. Then, for each next level, the best `ceil(n / eta)`
successful points of the previous level (non-dominated rank, then crowding) are re-evaluated there. The final
front is the non-dominated set of the points measured at the last level. Baselines are measured at the last
level too.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..space import SearchSpace
from .evaluator import config_from_dict, evaluate_trial, resolve_evaluator
from .executors import open_executor
from .journal import Journal
from .pareto import (
    default_reference_point,
    hypervolume,
    non_dominated,
    objective_label,
    promotion_size,
    select_for_promotion,
    write_front,
)
from .problem import SearchProblem
from .recipe import Recipe, hub_id, resolve_model
from .strategies import make_strategy

FAILED_F = 1e15
"""Objective value of a failed trial (every objective): worse than any real point, finite so crowding works."""


@dataclass
class SearchResult:
    out_dir: Path
    document: dict[str, Any]
    n_trials: int
    n_evaluated: int
    """Trials evaluated by this invocation (the rest came from the journal)."""


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


class Search:
    """One search of `recipe` into `out_dir` (see the module docstring). `run()` does everything."""

    def __init__(
        self,
        recipe: Recipe,
        out_dir: str | Path,
        *,
        workers: int = 1,
        scheduler: str | None = None,
        processes: bool = True,
        progress: bool = True,
    ) -> None:
        self.recipe = recipe
        self.out_dir = Path(out_dir)
        self.workers, self.scheduler, self.processes, self.progress = workers, scheduler, processes, progress
        # everything that can be wrong with the recipe fails here, before any training
        self.model = resolve_model(recipe.model)
        try:
            self.space = SearchSpace.from_pretrained(self.model, recipe.space, task_type="SEQ_CLS")
        except OSError as error:
            raise ValueError(f"recipe field `model`: cannot load the config of {recipe.model!r}: {error}") from None
        resolve_evaluator(recipe.evaluator)
        if recipe.evaluator is None:
            from ..training.tasks import load_task

            try:
                load_task(recipe.task)
            except (TypeError, ValueError) as error:
                raise ValueError(f"recipe field `task`: {error}") from None
        self.baseline_configs = {}
        for i, baseline in enumerate(recipe.baselines):
            try:
                self.baseline_configs[baseline["name"]] = config_from_dict(
                    {"peft_type": "MIXED_PET", "task_type": "SEQ_CLS", **baseline["config"]}
                )
            except (TypeError, ValueError, KeyError) as error:
                raise ValueError(f"recipe field `baselines[{i}].config`: {error}") from None
        self.objectives = list(recipe.objectives)
        self.max_parameters = self.space.max_cost()
        self.levels = recipe.fidelity_levels
        self.journal: Journal | None = None
        self.n_evaluated = 0
        self._next_id = 0
        self._metric_name = "metric"
        self._bar = None

    # -- records --------------------------------------------------------------------------------------------------
    def _fidelity_key(self, level: int) -> str:
        return json.dumps(self.levels[level], sort_keys=True)

    def _request(self, kind: str, key: str, x: dict | None, config: Any, level: int, name: str | None = None) -> dict:
        cached = self.journal.get(key)
        if cached is not None:
            trial_id = cached["trial_id"]
        else:
            trial_id = self._next_id
        self._next_id = max(self._next_id, trial_id + 1)
        return {
            "trial_id": trial_id,
            "key": key,
            "kind": kind,
            "name": name,
            "x": x,
            "config": _plain(config.to_dict()),
            "level": level,
            "fidelity": dict(self.levels[level]),
            "model": self.model,
            "task": self.recipe.task,
            "training": dict(self.recipe.training),
            "seed": self.recipe.seed,
            "evaluator": self.recipe.evaluator,
        }

    def _record(self, request: dict, outcome: dict) -> dict:
        ok = outcome.get("status") == "ok"
        if request["kind"] == "baseline":
            config = self.baseline_configs[request["name"]]
            analytic = _analytic_count(config, self.space)
            parameters = int(outcome.get("trainable_parameters", analytic if analytic is not None else -1))
        else:
            parameters = self.space.cost(request["x"])
        metric_name = outcome.get("metric_name") or self._metric_name
        if ok:
            self._metric_name = metric_name
        values = {
            "metric": outcome.get("metric"),
            "trainable_parameters": parameters,
            "wall_time_s": outcome.get("run_wall_time_s", outcome.get("wall_time_s")),
            "peak_memory_bytes": outcome.get("peak_memory_bytes"),
        }
        if ok and any(values[name] is None for name in self.objectives):
            missing = [name for name in self.objectives if values[name] is None]
            ok, outcome = False, {**outcome, "status": "failed", "error": f"the evaluation did not report {missing}"}
        F = [(-float(values[n]) if n == "metric" else float(values[n])) if ok else FAILED_F for n in self.objectives]
        record = {
            key: request[key] for key in ("trial_id", "key", "kind", "name", "x", "config", "level", "fidelity", "seed")
        }
        record.update(
            status="ok" if ok else "failed",
            error=outcome.get("error"),
            metric_name=metric_name,
            metric=values["metric"] if ok else None,
            trainable_parameters=parameters,
            objectives={objective_label(n, metric_name): values[n] for n in self.objectives} if ok else None,
            F=F,
            wall_time_s=float(outcome.get("wall_time_s", 0.0)),
        )
        for extra in ("metrics", "train_loss", "run_wall_time_s", "peak_memory_bytes", "trainable_parameters_with_head"):
            if extra in outcome:
                record[extra] = outcome[extra]
        if "trainable_parameters" in outcome:
            record["measured_trainable_parameters"] = outcome["trainable_parameters"]
        return record

    # -- evaluation -----------------------------------------------------------------------------------------------
    def _evaluate(self, executor: Any, requests: list[dict]) -> list[dict]:
        """Records of `requests` in order: from the journal when finished before, else evaluated and journaled."""
        records: list[dict | None] = [self.journal.get(r["key"]) for r in requests]
        todo = []
        seen = set()
        for i, r in enumerate(requests):
            if records[i] is not None:
                self._tick(records[i], cached=True)
            elif r["key"] not in seen:  # a point asked twice in one batch is evaluated once
                seen.add(r["key"])
                todo.append(i)

        def on_done(j: int, outcome: dict) -> None:
            record = self._record(requests[todo[j]], outcome)
            self.journal.add(record)
            self.n_evaluated += 1
            self._tick(record, cached=False)

        if todo:
            executor.map(evaluate_trial, [requests[i] for i in todo], on_done)
        return [self.journal.get(r["key"]) for r in requests]

    def _tick(self, record: dict, cached: bool) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        ok = [r for r in self.journal if r["status"] == "ok"]
        if ok:
            best = max(r["metric"] for r in ok)
            F = np.array([r["F"] for r in ok])
            ref = self.recipe.reference_point or default_reference_point(self.objectives, self.max_parameters, F)
            self._bar.set_postfix({f"best {self._metric_name}": f"{best:.4f}", "HV": f"{hypervolume(F, ref):.4g}"})

    # -- phases ---------------------------------------------------------------------------------------------------
    def _search_phase(self, executor: Any) -> list[dict]:
        problem = SearchProblem(self.space, self.objectives)
        strategy = make_strategy(self.recipe.algorithm, self.recipe.pop_size, self.space.repair)
        strategy.setup(problem, seed=self.recipe.seed)
        records: list[dict] = []
        asked = 0
        while asked < self.recipe.n_trials:
            points = strategy.ask()[: self.recipe.n_trials - asked]
            if not points:
                break
            requests = [
                self._request("search", self._point_key(x, 0), x, self.space.decode(x), level=0) for x in points
            ]
            batch = self._evaluate(executor, requests)
            strategy.tell(points, np.array([r["F"] for r in batch], dtype=float))
            records.extend(batch)
            asked += len(points)
        return records

    def _point_key(self, x: dict, level: int) -> str:
        return f"{self._fidelity_key(level)}|{self.space.key(x)}"

    def _promotion_phase(self, executor: Any, records: list[dict]) -> list[dict]:
        """Successive halving over the fidelity levels; returns the records measured at the last level."""
        current = _unique_ok(records)
        for level in range(1, len(self.levels)):
            if not current:
                break
            chosen = select_for_promotion(np.array([r["F"] for r in current]), promotion_size(len(current), self.recipe.eta))
            requests = [
                self._request("promotion", self._point_key(current[i]["x"], level), current[i]["x"],
                              self.space.decode(current[i]["x"]), level=level)
                for i in chosen
            ]
            current = _unique_ok(self._evaluate(executor, requests))
        return current

    def _baseline_phase(self, executor: Any) -> list[dict]:
        level = len(self.levels) - 1
        requests = [
            self._request("baseline", f"baseline:{name}|{self._fidelity_key(level)}", None, config, level, name=name)
            for name, config in self.baseline_configs.items()
        ]
        return self._evaluate(executor, requests) if requests else []

    def expected_trials(self) -> int:
        n, total = self.recipe.n_trials, self.recipe.n_trials
        for _ in range(1, len(self.levels)):
            n = promotion_size(n, self.recipe.eta)
            total += n
        return total + len(self.baseline_configs)

    def run(self) -> SearchResult:
        start = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.out_dir / "journal.jsonl", self.recipe.fingerprint(), _plain(self.recipe.raw))
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.expected_trials(), desc="trials", unit="trial", dynamic_ncols=True)
        try:
            with open_executor(self.workers, self.scheduler, self.processes) as executor:
                searched = self._search_phase(executor)
                final = self._promotion_phase(executor, searched) if len(self.levels) > 1 else _unique_ok(searched)
                baselines = _unique_ok(self._baseline_phase(executor))
        finally:
            if self._bar is not None:
                self._bar.close()
        document = self._export(final, baselines, wall_time=time.perf_counter() - start)
        return SearchResult(self.out_dir, document, n_trials=len(self.journal), n_evaluated=self.n_evaluated)

    # -- export ---------------------------------------------------------------------------------------------------
    def _export(self, final: list[dict], baselines: list[dict], wall_time: float) -> dict:
        from .plot import plot_front

        trials = list(self.journal)
        ok_trials = [r for r in trials if r["status"] == "ok"]
        F_all = np.array([r["F"] for r in ok_trials]) if ok_trials else np.zeros((0, len(self.objectives)))
        ref = self.recipe.reference_point or default_reference_point(self.objectives, self.max_parameters, F_all)
        F_final = np.array([r["F"] for r in final]) if final else np.zeros((0, len(self.objectives)))
        front = [final[i] for i in non_dominated(F_final)]
        front.sort(key=lambda r: (r["trainable_parameters"], -r["metric"], r["trial_id"]))
        if not front:
            warnings.warn("No successful trial at the final fidelity: the front is empty (see journal.jsonl errors).")
        metric_name = next((r["metric_name"] for r in ok_trials), self._metric_name)
        full_runs = [r["wall_time_s"] for r in final if r["kind"] != "baseline"]
        total_time = sum(r["wall_time_s"] for r in trials)
        header = {
            "model": hub_id(self.recipe.model),
            "model_path": self.model,
            "task": self.recipe.task_name,
            "metric": metric_name,
            "objectives": [
                {"name": objective_label(n, metric_name), "direction": "max" if n == "metric" else "min"}
                for n in self.objectives
            ],
            "reference_point": [float(v) for v in ref],
            "hypervolume": hypervolume(np.array([r["F"] for r in front]) if front else np.zeros((0, 2)), ref),
            "search": {
                "algorithm": self.recipe.algorithm,
                "n_trials": len(trials),
                "n_failed": sum(r["status"] != "ok" for r in trials),
                "seed": self.recipe.seed,
                "wall_time_s": wall_time,
                "trials_time_s": total_time,
                "cost_full_runs": total_time / float(np.mean(full_runs)) if full_runs else None,
                "fidelity_levels": self.levels,
                "eta": self.recipe.eta,
                "space": self.space.describe(),
                "recipe": _plain(self.recipe.raw),
            },
        }
        configs = [config_from_dict(r["config"]) for r in front]
        for config in configs:
            config.base_model_name_or_path = hub_id(self.recipe.model)
        baseline_docs = [
            {"name": r["name"], "metric": r["metric"], "trainable_parameters": r["trainable_parameters"], "trial_id": r["trial_id"]}
            for r in baselines
        ]
        document = write_front(self.out_dir, front, configs=configs, header=header, baselines=baseline_docs)
        plot_front(
            self.out_dir / "pareto.png", trials, document["points"], baseline_docs, metric_name=metric_name,
            title=f"{Path(str(header['model'])).name} on {header['task']}: {len(trials)} trials, HV {header['hypervolume']:.4g}",
        )
        return document


def _unique_ok(records: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in records:
        if r["status"] == "ok" and r["key"] not in seen:
            seen.add(r["key"])
            out.append(r)
    return out


def _analytic_count(config: Any, space: SearchSpace) -> int | None:
    from ..tuners.mixed import MixedPetConfig

    if isinstance(config, MixedPetConfig):
        return space.cost(config)
    return None


def run_search(recipe: Recipe, out_dir: str | Path, **kwargs: Any) -> SearchResult:
    """Run (or resume) the search of `recipe` into `out_dir`; see `Search` for the keyword arguments."""
    return Search(recipe, out_dir, **kwargs).run()


__all__ = ["FAILED_F", "Search", "SearchResult", "run_search"]
