"""AutoPEFT's search: multi-objective Bayesian optimisation with BoTorch (`algorithm.name: mobo`).

Why: at a budget of a few dozen trials a genetic algorithm barely leaves its first generation; a surrogate of the
metric and a hypervolume-improvement acquisition use every trial. Design (see docs/search.md, "mobo"):

- Surrogate: a GP of the task metric only (`surrogate: gp`, `SingleTaskGP` fitted by marginal likelihood, or
  `saas`, AutoPEFT's `SaasFullyBayesianSingleTaskGP` fitted by short NUTS chains). `trainable_parameters` is exact
  (`SearchSpace.cost`, scaled by the largest point's cost) and enters through the MC objective, which computes it
  from the candidate's encoding, so the acquisition never models what is known. Measured objectives
  (`wall_time_s`, `peak_memory_bytes`) get their own GP (a `ModelListGP`).
- Inputs: `mobo_encoding.SpaceEncoding` (ordinal choices and 0/1 layer flags in [0, 1]).
- Initial design: scrambled Sobol points mapped to the space and repaired, until `n_initial` successful points
  (warm-start records count) are known; then batches of `pop_size` points maximising qLogNEHVI (sequential
  greedy, `optimize_acqf_discrete`). Candidates: every unseen point when the space has <= `enumerate_limit` points,
  else a pool of random points and the one-step neighbours of the current Pareto points, plus the neighbours of
  the pool's best-scoring points (one round of local search). Each candidate is scored alone (q = 1) and the
  greedy batch is built from the best `shortlist` of them (a batch's later picks are chosen jointly with the
  earlier ones, as pending points). An evaluated or proposed point is never proposed again.
- Failed trials (objectives `FAILED_F`) are never re-proposed and never enter the surrogate.
- Fidelity: the driver asks only at `fidelity.levels[0]`, so the surrogate sees level-0 metrics only (and the
  warm start reads the other journal's level-0 search records).
- Determinism: every random draw (pool, torch for the GP fit and the QMC sampler, NUTS) is seeded from the seed
  and the number of points told so far, so a resumed search that replays the journal proposes the same points.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from ..journal import read_journal
from ..trial import FAILED_F, TrialRecord
from .base import Point, RepairFn, Strategy, register_strategy
from .mobo_encoding import SpaceEncoding

BO_INSTALL_HINT = 'pip install "peft_autoconfig[bo]"'
SAAS_INSTALL_HINT = 'pip install "peft_autoconfig[saas]"'
EXACT_OBJECTIVES = ("trainable_parameters",)


def require_botorch() -> None:
    """`ImportError` with the install command unless BoTorch and GPyTorch import."""
    try:
        import botorch  # noqa: F401
        import gpytorch  # noqa: F401
    except ImportError:
        raise ImportError(f"`mobo` needs BoTorch and GPyTorch; install them with `{BO_INSTALL_HINT}`.") from None


def journal_path(warm_start: str | os.PathLike) -> Path:
    """A journal file, or the `journal.jsonl` of a search folder."""
    path = Path(warm_start)
    return path / "journal.jsonl" if path.is_dir() else path


def read_warm_start(warm_start: str | os.PathLike) -> list[TrialRecord]:
    """The successful level-0 search records of another search's journal (read through `read_journal`)."""
    path = journal_path(warm_start)
    where = "recipe field `algorithm.warm_start`"
    if not path.is_file():
        raise ValueError(f"{where}: no journal at {str(path)!r} (give a journal.jsonl or a search folder holding one)")
    try:
        records = [TrialRecord.from_dict({k: v for k, v in d.items() if k != "type"}) for d in read_journal(path)]
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{where}: {str(path)!r} is not a readable journal: {error}") from None
    usable = [r for r in records if r.ok and r.x is not None and r.kind == "search" and r.level == 0]
    if not usable:
        raise ValueError(f"{where}: {str(path)!r} holds no successful search trial to learn from")
    return usable


@register_strategy
class MoboStrategy(Strategy):
    """Multi-objective Bayesian optimisation over the discrete space (see the module docstring)."""

    name = "mobo"
    option_names: ClassVar[tuple[str, ...]] = ("surrogate", "n_initial", "warm_start")
    enumerate_limit: ClassVar[int] = 5000
    pool_size: ClassVar[int] = 1024
    local_search_starts: ClassVar[int] = 8
    shortlist: ClassVar[int] = 128
    mc_samples: ClassVar[int] = 64
    saas_nuts: ClassVar[dict[str, int]] = {"warmup_steps": 64, "num_samples": 64, "thinning": 8}

    def __init__(
        self, pop_size: int, repair: RepairFn, *, surrogate: str = "gp", n_initial: Optional[int] = None,
        warm_start: Optional[str] = None,
    ) -> None:
        super().__init__(pop_size, repair)
        self.surrogate = surrogate
        self.n_initial = n_initial or pop_size
        self.warm_start = warm_start

    @classmethod
    def check_available(cls, surrogate: str = "gp", warm_start: Optional[str] = None, **options: Any) -> None:
        """Recipe check: the extra is installed, the SAAS backend too if asked for, the warm journal readable."""
        try:
            require_botorch()
        except ImportError as error:
            raise ValueError(f"recipe field `algorithm.name`: {error}") from None
        if surrogate == "saas":
            try:
                import numpyro  # noqa: F401
            except ImportError:
                raise ValueError(
                    f"recipe field `algorithm.surrogate`: `saas` needs numpyro (JAX); install it with `{SAAS_INSTALL_HINT}`"
                ) from None
        if warm_start is not None:
            read_warm_start(warm_start)

    # -- setup ----------------------------------------------------------------------------------------------------
    def _setup(self, seed: int) -> None:
        require_botorch()
        from torch.quasirandom import SobolEngine

        space = self.problem.space
        self.space = space
        self.objectives = list(self.problem.objective_names)
        self.encoding = SpaceEncoding(space.variables, self.repair, space.key)
        self.cost_scale = float(space.max_cost())
        self.seed = seed
        self.n_told = 0
        self.seen: set[str] = set()
        self.timings: list[dict[str, Any]] = []
        self._fit_s = 0.0  # surrogate-fit seconds of the current ask (`_acquisition` adds to it)
        self.points: list[Point] = []
        self.F: list[list[float]] = []
        self._costs: dict[tuple[int, ...], float] = {}
        self.sobol = SobolEngine(self.encoding.dims, scramble=True, seed=seed)
        self.all_points = list(self.encoding.enumerate()) if self.encoding.size <= self.enumerate_limit else None
        if self.all_points is not None and self.pop_size > len(self.all_points):
            raise ValueError(
                f"recipe field `algorithm.pop_size` ({self.pop_size}) is larger than the search space "
                f"({len(self.all_points)} distinct points)"
            )
        self.warm: list[TrialRecord] = []
        if self.warm_start is not None:
            self.warm = read_warm_start(self.warm_start)
            for record in self.warm:
                self.encoding.check(record.x, "recipe field `algorithm.warm_start`")

    # -- ask / tell -----------------------------------------------------------------------------------------------
    def ask(self) -> list[Point]:
        rng = np.random.default_rng([self.seed, self.n_told])
        measured = any(n not in EXACT_OBJECTIVES and n != "metric" for n in self.objectives)
        known = len(self.points) + (0 if measured else len(self.warm))  # measured costs are learnt from this run only
        self._fit_s = 0.0
        start = time.perf_counter()
        if known < max(self.n_initial, 2):
            batch, kind = self._initial_batch(rng), "initial"
        else:
            batch, kind = self._bo_batch(rng), "bo"
        total = time.perf_counter() - start
        self.timings.append({"proposal": kind, "fit_s": self._fit_s, "acquisition_s": total - self._fit_s,
                             "n_training_points": known})
        self.seen.update(self.space.key(x) for x in batch)
        return batch

    def tell(self, points: list[Point], F: np.ndarray) -> None:
        for x, f in zip(points, np.asarray(F, dtype=float)):
            self.seen.add(self.space.key(x))
            if np.all(f < FAILED_F):
                self.points.append(self.space.canonical(x))
                self.F.append([float(v) for v in f])
        self.n_told += len(points)

    def diagnostics(self) -> list[dict[str, Any]]:
        """Per ask: `initial` or `bo`, seconds fitting the surrogate(s), seconds for the rest of the proposal
        (acquisition: scoring, local search, `optimize_acqf_discrete`), and the number of points it was fitted on."""
        return list(self.timings)

    # -- proposals ------------------------------------------------------------------------------------------------
    def _unseen(self, points: list[Point], limit: int | None = None) -> list[Point]:
        """`points` without the seen ones and without repeats, in order (the first `limit`)."""
        out, keys = [], set()
        for x in points:
            key = self.space.key(x)
            if key not in self.seen and key not in keys:
                keys.add(key)
                out.append(x)
                if limit is not None and len(out) == limit:
                    break
        return out

    def _initial_batch(self, rng: np.random.Generator) -> list[Point]:
        """The recipe's `points_to_evaluate`, then scrambled Sobol points mapped to the space; unseen random (or
        remaining) points when Sobol repeats."""
        batch: list[Point] = self._unseen(list(self.initial_points), self.pop_size)
        if len(batch) == self.pop_size:
            return batch
        for _ in range(20):
            drawn = [self.encoding.from_unit(u) for u in self.sobol.draw(self.pop_size).double().numpy()]
            batch = self._unseen(batch + drawn, self.pop_size)
            if len(batch) == self.pop_size:
                return batch
        rest = self.all_points if self.all_points is not None else self.encoding.random(rng, self.pool_size)
        return self._unseen(batch + list(rest), self.pop_size)

    def _bo_batch(self, rng: np.random.Generator) -> list[Point]:
        import torch
        from botorch.optim import optimize_acqf_discrete

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            acquisition = self._acquisition(int(rng.integers(2**31)))
            candidates = self._unseen(self.all_points if self.all_points is not None else self._pool(rng))
            scores = self._scores(acquisition, candidates)
            if self.all_points is None:  # one round of local search around the pool's best points
                best = np.argsort(-scores, kind="stable")[: self.local_search_starts]
                extra = self._unseen(candidates + [n for i in best for n in self.encoding.neighbours(candidates[i])])
                extra = extra[len(candidates):]
                candidates, scores = candidates + extra, np.concatenate([scores, self._scores(acquisition, extra)])
            if len(candidates) <= self.pop_size:
                return candidates
            shortlist = [candidates[i] for i in np.argsort(-scores, kind="stable")[: max(self.shortlist, 4 * self.pop_size)]]
            by_indices = {self.encoding.indices(x): x for x in shortlist}
            choices = torch.tensor(self.encoding.encode(shortlist), dtype=torch.double)
            chosen, _ = optimize_acqf_discrete(acquisition, q=self.pop_size, choices=choices, max_batch_size=512)
        return [by_indices[self.encoding.row_indices(row)] for row in chosen.numpy()]

    def _pool(self, rng: np.random.Generator) -> list[Point]:
        """Random points and the one-step neighbours of the current Pareto points (large spaces)."""
        return self.encoding.random(rng, self.pool_size) + [n for x in self._front_points() for n in self.encoding.neighbours(x)]

    def _scores(self, acquisition: Any, points: list[Point]) -> np.ndarray:
        """The acquisition value of each point alone (q = 1)."""
        import torch

        if not points:
            return np.zeros(0)
        X = torch.tensor(self.encoding.encode(points), dtype=torch.double).unsqueeze(-2)
        with torch.no_grad():
            return torch.cat([acquisition(chunk) for chunk in X.split(512)]).numpy()

    def _front_points(self) -> list[Point]:
        """The Pareto points of this run (of the warm start while this run has none)."""
        from ..pareto import non_dominated

        if self.points:
            return [self.points[i] for i in non_dominated(np.array(self.F))]
        F = np.array([[-r.metric, self._cost(self.encoding.indices(r.x))] for r in self.warm])
        return [self.warm[i].x for i in non_dominated(F)]

    def _cost(self, indices: tuple[int, ...]) -> float:
        """Exact trainable parameters of the point with these option indices, divided by the largest point's."""
        if indices not in self._costs:
            self._costs[indices] = self.space.cost(self.encoding.point(indices)) / self.cost_scale
        return self._costs[indices]

    # -- surrogate and acquisition --------------------------------------------------------------------------------
    def _training_data(self) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Inputs and maximised targets per modelled objective (metric; negated measured costs)."""
        modelled = [n for n in self.objectives if n not in EXACT_OBJECTIVES]
        own_X = self.encoding.encode(self.points)
        own = {n: -np.array([f[self.objectives.index(n)] for f in self.F]) for n in modelled}
        warm_X = self.encoding.encode([r.x for r in self.warm])
        warm_metric = np.array([r.metric for r in self.warm], dtype=float)
        if len(own["metric"]) >= 2 and len(warm_metric) >= 2 and own["metric"].std() > 0 and warm_metric.std() > 0:
            # another task or seed: bring the warm metrics to this run's location and scale
            warm_metric = (warm_metric - warm_metric.mean()) / warm_metric.std() * own["metric"].std() + own["metric"].mean()
        X, Y = {}, {}
        for name in modelled:
            if name == "metric":
                X[name], Y[name] = np.vstack([own_X, warm_X]), np.concatenate([own[name], warm_metric])
            else:  # measured costs: this run's own measurements only (another machine's are not comparable)
                X[name], Y[name] = own_X, own[name]
        return modelled, X, Y

    def _fit(self, X: np.ndarray, Y: np.ndarray, nuts_seed: int) -> Any:
        import torch
        from botorch.models.transforms.outcome import Standardize

        train_X = torch.tensor(X, dtype=torch.double)
        train_Y = torch.tensor(Y, dtype=torch.double).unsqueeze(-1)
        if self.surrogate == "saas":
            from botorch.fit import fit_fully_bayesian_model_nuts
            from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

            model = SaasFullyBayesianSingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=1))
            fit_fully_bayesian_model_nuts(model, disable_progbar=True, seed=nuts_seed, **self.saas_nuts)
            return model
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from gpytorch.mlls import ExactMarginalLogLikelihood

        model = SingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        return model

    def _acquisition(self, seed: int) -> Any:
        """qLogNEHVI over [modelled objectives, exact cost], in the recipe's objective order (maximisation).

        The baseline front is this run's own points only: warm-start records are another task's or seed's
        measurements, so their predicted front is worth re-evaluating here (before this run has any point, the
        acquisition is qLogEHVI over an empty front).
        """
        import torch
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
        from botorch.models import ModelListGP
        from botorch.sampling import SobolQMCNormalSampler

        modelled, X, Y = self._training_data()
        start = time.perf_counter()
        models = [self._fit(X[n], Y[n], seed) for n in modelled]
        self._fit_s += time.perf_counter() - start
        model = models[0] if len(models) == 1 else ModelListGP(*models)

        def objective(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
            cost = self._cost_tensor(X).to(samples)
            if samples.dim() - 1 > cost.dim() + 1:  # a fully Bayesian model's MCMC dimension sits before q
                cost = cost.unsqueeze(-2)
            columns = [
                -cost.expand(samples.shape[:-1]) if n in EXACT_OBJECTIVES else samples[..., modelled.index(n)]
                for n in self.objectives
            ]
            return torch.stack(columns, dim=-1)

        reference = []
        for name in self.objectives:
            if name == "metric":  # the driver's hypervolume reference: 0 (lower when metrics can be negative)
                y = Y["metric"]
                reference.append(min(0.0, float(y.min() - 0.1 * (np.ptp(y) or 1.0))))
            elif name in EXACT_OBJECTIVES:
                reference.append(-1.1)
            else:
                reference.append(1.1 * float(Y[name].min()))
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([self.mc_samples]), seed=seed)
        if not self.points:  # warm data only: the improvement over nothing, i.e. the predicted front is worth most
            from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
            from botorch.utils.multi_objective.box_decompositions import FastNondominatedPartitioning

            reference = torch.tensor(reference, dtype=torch.double)
            empty = FastNondominatedPartitioning(ref_point=reference, Y=torch.empty(0, len(reference), dtype=torch.double))
            return qLogExpectedHypervolumeImprovement(
                model=model, ref_point=reference, partitioning=empty, objective=GenericMCMultiOutputObjective(objective),
                sampler=sampler,
            )
        return qLogNoisyExpectedHypervolumeImprovement(
            model=model, ref_point=reference, X_baseline=torch.tensor(self.encoding.encode(self.points), dtype=torch.double),
            objective=GenericMCMultiOutputObjective(objective), prune_baseline=True, cache_root=False, sampler=sampler,
        )

    def _cost_tensor(self, X: Any) -> Any:
        """Exact scaled cost of every encoded row of `X` (`batch x q x d` -> `batch x q`)."""
        import torch

        rows = X.detach().reshape(-1, X.shape[-1]).numpy()
        costs = [self._cost(self.encoding.row_indices(row)) for row in rows]
        return torch.tensor(costs, dtype=torch.double).reshape(X.shape[:-1])
