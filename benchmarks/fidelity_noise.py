"""How much of the low fidelity's ranking error is the last level's own noise? Each point of a search's ranking is
trained once more at the last fidelity level with other seeds; Kendall tau between two seeds of the same level is the
ceiling that any low fidelity's tau against one seed of it can reach.

    python benchmarks/search_quality.py --recipe recipes/rotten_tomatoes.yaml --out runs/bench --rank-all
    python benchmarks/fidelity_noise.py --recipe recipes/rotten_tomatoes.yaml --run runs/bench/nsga2-s0 --seeds 1

The points are every level-0 point of the run (from `RUN/ranking/journal.jsonl`, written by `search_quality.py
--rank-all`, else the run's journal: then only the promoted ones have a last-level value), re-trained at the last
level with each of `--seeds` in `RUN/noise-s<seed>/` (a search folder of the recipe with that seed: resumable, and
a point already measured there is not trained again).

A search's points sit near its front, close to one another; the low fidelity also has to rank the spread-out points
of a first generation. `--points-from FILE` (JSON lines, each with the point as `x`: a journal, or
`supernet_rank.py`'s stand-alone log) takes the points from there instead, and trains each at level 0 and at the
last level with the recipe's seed in `RUN/points/` (then the other seeds as above):

    python benchmarks/fidelity_noise.py --recipe recipes/rotten_tomatoes.yaml --run runs/noise_random \
        --points-from benchmarks/results/superpet_students_only/standalone_level.jsonl --seeds 1 2 3

Last-level values measured before (`supernet_rank.py`'s stand-alone runs of the same points, or another study's
search journal of the same model, task, space and training, e.g. one with another level 0) are reused with
`--reference SEED=FILE` instead of being trained again.

Reported (RUN/noise.json and RUN/noise.md, printed too), each Kendall tau with its p-value and N:
- `last_vs_last`: the last level at every pair of seeds (the ceiling);
- `first_vs_last`: level 0 against the last level at each seed, and against the mean over all seeds (a last level
  with less noise: what the low fidelity should predict);
- the per-point standard deviation across seeds beside the spread of the last level's values across points;
- `noiseless_ceiling`: the tau that even a noise-free predictor would reach against one seed and against the mean,
  estimated from the seeds' agreement (a model, not a measurement: is the goal reachable at this noise?);
- `with_parameters`: each level (its mean over seeds) against the trainable parameter count (a level that favours
  small configurations ranks how soon they leave chance, not the final order);
- with `--first-too` (level 0 trained at the other seeds as well): `first_vs_first`, level 0 against itself (its
  own noise), and `first_mean_vs_last_mean`, the two levels each averaged over their seeds (whether the levels rank
  alike once most of the seed noise is averaged out; a search reads one seed of level 0, `first_vs_last`).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from peft_autoconfig.search import parse_recipe, read_journal
from peft_autoconfig.search.driver import Search

try:   # as a script (python benchmarks/...) and as a module (tests load it by path, with the repository importable)
    from search_quality import level_scores, tau_on_common
except ImportError:   # pragma: no cover - the module path
    from benchmarks.search_quality import level_scores, tau_on_common


def noiseless_ceiling(seed_tau: float | None, seeds: int) -> dict[str, float] | None:
    """The Kendall tau a perfect, noise-free predictor of the last level would reach against one seed of it and
    against the mean of `seeds` seeds, given the tau `seed_tau` between two seeds (an estimate under a bivariate-normal
    model, by Greiner's relation tau = 2/pi arcsin(r) and Spearman-Brown for the mean; a collapsed run is not
    normal noise, so read it as an order of magnitude). None when the seeds do not agree at all."""
    if seed_tau is None or seed_tau <= 0:
        return None
    one = float(np.sin(np.pi * seed_tau / 2))            # reliability of one seed (its correlation with another)
    mean = seeds * one / (1 + (seeds - 1) * one)           # reliability of the mean of `seeds`

    def tau(reliability: float) -> float:   # a noise-free predictor against a measure of this reliability
        return float(2 / np.pi * np.arcsin(np.sqrt(reliability)))

    return {"against_one_seed": tau(one), f"against_mean_of_{seeds}": tau(mean)}


def every_pair(values: dict[int, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Kendall tau between every two seeds' {point: value} maps, keyed "a-b" (a < b)."""
    return {f"{a}-{b}": tau_on_common(values[a], values[b]) for a, b in itertools.combinations(sorted(values), 2)}


def report(run_seed: int, first: dict[int, dict[str, float]], last: dict[int, dict[str, float]],
           parameters: dict[str, float] | None = None) -> dict[str, Any]:
    """The taus and spreads of `noise.json` from level-0 values per seed `first` (the run's seed at least) and
    last-level values per seed `last`; with the points' trainable `parameters`, each level's (mean's) tau with the
    size too (a low fidelity that favours small configurations ranks how soon they train, section 18)."""
    seeds = sorted(last)
    common = sorted(set.intersection(*(set(v) for v in last.values())))
    mean = {k: float(np.mean([last[s][k] for s in seeds])) for k in common}
    per_point_sd = [float(np.std([last[s][k] for s in seeds], ddof=1)) for k in common] if len(seeds) > 1 else []
    pairs = every_pair(last)
    known = [t["tau"] for t in pairs.values() if t["tau"] is not None]
    seed_tau = float(np.mean(known)) if pairs and len(known) == len(pairs) else None
    results = {
        "seeds": seeds, "n_points": len(common),
        "last_vs_last": pairs,
        "first_vs_last": {**{f"seed {s}": tau_on_common(first[run_seed], last[s]) for s in seeds},
                          "mean": tau_on_common(first[run_seed], mean)},
        "per_point_sd_mean": float(np.mean(per_point_sd)) if per_point_sd else None,
        "noiseless_ceiling": noiseless_ceiling(seed_tau, len(seeds)),
        "spread_across_points": {str(s): [min(last[s][k] for k in common), max(last[s][k] for k in common)]
                                 for s in seeds} if common else {},
    }
    if parameters:
        first_mean_all = {k: float(np.mean([first[s][k] for s in first if k in first[s]])) for k in first[run_seed]}
        results["with_parameters"] = {"level 0 (mean over its seeds)": tau_on_common(first_mean_all, parameters),
                                      "last level (mean over its seeds)": tau_on_common(mean, parameters)}
    if len(first) > 1:   # level 0 at other seeds too (`--first-too`): its own noise, and its mean's ranking
        first_seeds = sorted(first)
        both = sorted(set.intersection(*(set(v) for v in first.values())) & set(common))
        first_mean = {k: float(np.mean([first[s][k] for s in first_seeds])) for k in both}
        results["first_seeds"] = first_seeds
        results["first_vs_first"] = every_pair(first)
        results["first_mean_vs_last_mean"] = tau_on_common(first_mean, mean)
    return results


def format_report(results: dict[str, Any]) -> str:
    def row(name: str, t: dict[str, Any]) -> str:
        value = "n/a" if t["tau"] is None else f"{t['tau']:.3f} (p = {t['p_value']:.3g}, n = {t['n']})"
        return f"| {name} | {value} |"

    lines = ["| Kendall tau | value |", "|---|---|"]
    lines += [row(f"last level, seeds {pair}", t) for pair, t in results["last_vs_last"].items()]
    lines += [row(f"level 0 vs last level, {which}", t) for which, t in results["first_vs_last"].items()]
    lines += [row(f"level 0, seeds {pair}", t) for pair, t in results.get("first_vs_first", {}).items()]
    if "first_mean_vs_last_mean" in results:
        lines.append(row(f"mean of level 0 over seeds {results['first_seeds']} vs mean of the last level",
                         results["first_mean_vs_last_mean"]))
    lines += [row(f"{which} with the trainable parameters", t) for which, t in results.get("with_parameters", {}).items()]
    lines.append("")
    ceiling = results.get("noiseless_ceiling")
    if ceiling:
        lines.append("Estimated ceiling (bivariate-normal model of the seed noise, not a measurement): a noise-free "
                     "predictor of the last level would reach Kendall tau "
                     + ", ".join(f"{value:.3f} {name.replace('_', ' ')}" for name, value in ceiling.items()) + ".")
    if results["per_point_sd_mean"] is not None:
        lines.append(f"Mean per-point standard deviation across seeds: {results['per_point_sd_mean']:.4f}.")
    for seed, (low, high) in results["spread_across_points"].items():
        lines.append(f"Last level at seed {seed}: {low:.4f} to {high:.4f} across {results['n_points']} points.")
    return "\n".join(lines) + "\n"


def json_rows(path: Path, option: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a JSON-lines file named by `option`, blank lines skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"`{option}`: {str(path)!r} is not a file.")
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            yield number, json.loads(line)


def read_points(path: Path) -> list[dict[str, Any]]:
    """The distinct points (`x`) of a JSON-lines file, in first-seen order."""
    points: dict[str, dict[str, Any]] = {}
    for number, row in json_rows(path, "--points-from"):
        x = row.get("x")
        if not isinstance(x, dict):
            raise ValueError(f"`--points-from`: line {number} of {str(path)!r} has no point (`x`).")
        points.setdefault(json.dumps(x, sort_keys=True), x)
    return list(points.values())


def read_reference(spec: str, recipe: Any, last_level: int) -> tuple[int, dict[str, float]]:
    """`SEED=FILE`: last-level values measured before, as `supernet_rank.py` logs its stand-alone runs (rows with
    `x` and `cold.metric`, and the runner arguments they were trained with as `standalone`) or as a search journal
    holds them (another study's `noise-s<SEED>/journal.jsonl`: its trials at the recipe's last level). Rows trained
    otherwise than the recipe's last level at SEED on its selection split are refused; rows from before the arguments
    were logged are taken as the user says, with a note."""
    seed_text, _, file = spec.partition("=")
    if not seed_text.strip().lstrip("-").isdigit() or not file:
        raise ValueError(f"`--reference`: {spec!r} is not SEED=FILE (e.g. 0=runs/rank/standalone.jsonl).")
    seed = int(seed_text)
    level = {k: v for k, v in recipe.fidelity_levels[last_level].items() if v is not None}
    wanted = {"seed": seed, "eval_split": recipe.evaluation.selection_split, **level}
    rows = list(json_rows(Path(file), "--reference"))
    if rows and rows[0][1].get("type") == "header":
        return seed, journal_reference(rows, file, wanted, level, recipe.raw)
    values, unlogged = {}, 0
    for number, row in rows:
        if not isinstance(row.get("x"), dict) or "metric" not in (row.get("cold") or {}):
            raise ValueError(f"`--reference`: line {number} of {file!r} has no point (`x`) and stand-alone metric "
                             "(`cold.metric`).")
        if row.get("standalone") is None:
            unlogged += 1
        else:
            refuse_if_trained_otherwise(json.loads(row["standalone"]), wanted, number, file)
        values[json.dumps(row["x"], sort_keys=True)] = float(row["cold"]["metric"])
    if unlogged:
        print(f"note: {unlogged} rows of {file} do not log how they were trained; taken as the last level at seed {seed}.")
    return seed, values


def refuse_if_trained_otherwise(trained: dict[str, Any], wanted: dict[str, Any], number: int, file: str) -> None:
    """Raise, naming the line and each differing argument, when a reference row was not trained as `wanted`."""
    differs = {k: (trained.get(k), v) for k, v in wanted.items() if trained.get(k) != v}
    if differs:
        raise ValueError(f"`--reference`: line {number} of {file!r} was not trained as the recipe's last level at "
                         f"seed {wanted['seed']} (logged, wanted): {differs}.")


PROTOCOL_FIELDS = ("model", "task", "space", "training", "evaluator")
"""Recipe fields a journal used as a reference must share with the recipe (its level 0 and algorithm may differ)."""


def journal_reference(rows: list[tuple[int, dict[str, Any]]], file: str, wanted: dict[str, Any],
                      level: dict[str, Any], raw: dict[str, Any]) -> dict[str, float]:
    """{point: metric} of a search journal's successful trials at the last level (`level`). A journal of another
    model, task, space or training protocol than the recipe (`raw`), or a trial trained at another seed or scored on
    another split, is refused; trials at other levels are skipped."""
    theirs = rows[0][1].get("recipe") or {}
    for field in PROTOCOL_FIELDS:
        if theirs.get(field) != raw.get(field):
            raise ValueError(f"`--reference`: the journal {file!r} was searched with another `{field}` than the "
                             f"recipe's: {theirs.get(field)!r}, not {raw.get(field)!r}.")
    values = {}
    for number, row in rows:
        if row.get("type") != "trial" or row.get("status") != "ok" or not isinstance(row.get("x"), dict):
            continue
        if {k: v for k, v in (row.get("fidelity") or {}).items() if v is not None} != level:
            continue
        refuse_if_trained_otherwise({"seed": row.get("seed"), "eval_split": row.get("eval_split"), **level}, wanted,
                                    number, file)
        values[json.dumps(row["x"], sort_keys=True)] = float(row["metric"])
    if not values:
        raise ValueError(f"`--reference`: the journal {file!r} holds no successful trial at the recipe's last level "
                         f"({level}).")
    return values


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="the recipe the run was searched with")
    parser.add_argument("--run", required=True, help="the search folder (with ranking/ from search_quality --rank-all)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="other seeds to train the last level (and with --first-too level 0) with")
    parser.add_argument("--points-from", default=None,
                        help="JSON lines with points (`x`) to train at level 0 and at the last level in RUN/points/ "
                             "instead of a search's ranking")
    parser.add_argument("--first-too", action="store_true",
                        help="train level 0 at the other seeds too (its own noise; before their last level)")
    parser.add_argument("--reference", action="append", default=[], metavar="SEED=FILE",
                        help="last-level values at SEED measured before (supernet_rank.py's stand-alone log, or a "
                             "search journal such as another study's noise-s<SEED>/journal.jsonl): not trained again; "
                             "repeatable")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report on what RUN's folders and the references hold (a study stopped "
                             "part-way; a seed with level 0 alone counts for level 0)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    raw = yaml.safe_load(Path(args.recipe).read_text())
    base = Path(args.recipe).resolve().parent
    run_dir = Path(args.run)
    recipe = parse_recipe(raw, base_dir=base)
    last_level = len(recipe.fidelity_levels) - 1
    if last_level == 0:
        raise ValueError("`fidelity.levels`: the recipe has one level; there is no low fidelity to compare.")
    if recipe.seed in args.seeds:   # checked before anything trains
        raise ValueError(f"`--seeds`: {recipe.seed} is the run's own seed (`seed` in the recipe); name other seeds.")
    reference = dict(read_reference(spec, recipe, last_level) for spec in args.reference)
    if args.points_from is not None:
        chosen, search = read_points(Path(args.points_from)), Search(recipe, run_dir / "points", workers=args.workers,
                                                                      progress=True)
        # level 0 first: what the low fidelity says, before its reference (unless that was measured before)
        for level in () if args.report_only else (0,) if recipe.seed in reference else (0, last_level):
            search.evaluate_points(chosen, level)
        journal = run_dir / "points" / "journal.jsonl"
    else:
        journal = run_dir / "ranking" / "journal.jsonl"
        journal = journal if journal.is_file() else run_dir / "journal.jsonl"
    if not journal.is_file():
        raise FileNotFoundError(f"`--run`: {str(run_dir)!r} holds no search journal (journal.jsonl).")
    trials = read_journal(journal)
    first = {recipe.seed: level_scores(trials, 0)}
    last = {recipe.seed: reference.get(recipe.seed) or level_scores(trials, last_level)}
    points = [json.loads(k) for k in sorted(last[recipe.seed])]
    for seed in args.seeds:
        seeded = parse_recipe({**raw, "seed": seed}, base_dir=base)
        folder = run_dir / f"noise-s{seed}"
        search = Search(seeded, folder, workers=args.workers, progress=True)
        if args.first_too and not args.report_only:
            search.evaluate_points(points, 0)
        if seed not in reference and not args.report_only:
            search.evaluate_points(points, last_level)
        trained = read_journal(folder / "journal.jsonl") if (folder / "journal.jsonl").is_file() else []
        measured = reference.get(seed) or level_scores(trained, last_level)
        if measured:   # with --report-only a seed may hold level 0 alone
            last[seed] = measured
        trained_first = level_scores(trained, 0)
        if args.first_too and trained_first:
            first[seed] = trained_first
    for seed, values in reference.items():   # a seed measured before and not named in --seeds is still a reference
        last.setdefault(seed, values)
    sizes = {json.dumps(t["x"], sort_keys=True): float(t["trainable_parameters"]) for t in trials
             if t["x"] is not None and t.get("trainable_parameters") is not None}
    results = report(recipe.seed, first, last, sizes)
    (run_dir / "noise.json").write_text(json.dumps(results, indent=2) + "\n")
    text = format_report(results)
    (run_dir / "noise.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
