"""Does the super-PET rank configurations as stand-alone training does? Kendall tau on N configurations.

    python benchmarks/supernet_rank.py --recipe recipes/rotten_tomatoes_supernet.yaml --out runs/supernet_rank --n 20
    python benchmarks/supernet_rank.py --recipe ... --out ... --n 20 --warm-start      # + re-training from the slices
    python benchmarks/supernet_rank.py --recipe ... --out ... --n 20 --budget final --score-full --workers 4
        # stand-alone at the recipe's `final:` budget, 4 runs at a time, slices also scored on the whole split
    python benchmarks/supernet_rank.py --recipe ... --out ... --points-from runs/rt_supernet --budget final \
        --split report --warm-start     # a `supernet` search's front at the final budget on the test split, cold
                                        # and warm from its slices (the search's super-PET must be OUT's)
    python benchmarks/supernet_rank.py --recipe ... --out OTHER --n 20 --budget final --learning-rate-scale 0.1
        # another super-PET; copy OUT/standalone-final.jsonl into OTHER first to reuse the stand-alone runs (a row is
        # reused only when its runs were trained with the same budget, settings and seed as OTHER's recipe asks)

The recipe's space, training settings, fidelity levels and selection split are used exactly as the `supernet`
strategy uses them: the super-PET is trained with the sandwich rule at the first fidelity level (the recipe's
`algorithm.settings` for the sandwich, when the recipe names `supernet`), N distinct random points of the space are
scored on their slices on the selection split (`settings.score_subset` examples, as in the search), and each is
trained stand-alone from scratch at the last fidelity level and scored on `evaluation.eval_subset` examples of the
same split (with `--warm-start`, once more starting from its slice). Everything is cached
under OUT (`superpet/`, `standalone.jsonl`), so an interrupted run resumes.

Reported (OUT/results.json and OUT/results.md, printed too): Kendall tau and Spearman rho between the super-PET
scores and the stand-alone metrics (and, with `--warm-start`, between the cold and warm stand-alone metrics and the
mean gain of the warm start), each with its p-value and N; the wall times of the super-PET training, of one slice
scoring and of one stand-alone run, and the super-PET training in units of one stand-alone run (machine load counts,
so compare these on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from peft_autoconfig.front import config_to_dict
from peft_autoconfig.search import load_recipe
from peft_autoconfig.search.oneshot import OneShotContext
from peft_autoconfig.search.recipe import resolve_model
from peft_autoconfig.search.space import SearchSpace
from peft_autoconfig.search.strategies.supernet import SupernetSettings
from peft_autoconfig.search.superpet import (SliceScorer, load_superpet, save_slice, superpet_run_kwargs,
                                             superpet_training, train_superpet)
from peft_autoconfig.training.runner import RunConfig, run


def sample_points(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` distinct random points of the space (fewer if the space is smaller), in draw order."""
    rng = np.random.default_rng(seed)
    points: dict[str, dict[str, Any]] = {}
    for _ in range(100 * n):
        x = space.sample(rng)
        points.setdefault(space.key(x), x)
        if len(points) == n:
            break
    return list(points.values())


def standalone(run_kwargs: dict[str, Any], config: Any, init_adapter: str | None) -> dict[str, Any]:
    """One stand-alone training run (a module-level function, so a worker process can run it)."""
    result = run(RunConfig(peft_config=config, init_adapter=init_adapter, save_adapter=False, show_progress=False,
                           **run_kwargs))
    return {"metric": result.metric_value, "wall_time_s": result.wall_time_s}


def standalone_kwargs(context: OneShotContext, recipe: Any, budget: str, seed: int | None = None,
                      split: str = "selection") -> dict[str, Any]:
    """Runner arguments of a stand-alone run: the recipe's training settings at the last fidelity level (what the
    search's re-training uses) or at its `final:` budget (training subset, epochs, first seed), scored on the
    selection split like every search trial or, with `split="report"`, on the report split as the search's final
    stage scores; `seed` replaces the budget's seed (another replicate of the same budget: its initialisation, data
    order and training subset)."""
    kwargs = dict(context.training)
    default_seed = context.seed
    if budget == "final":
        final = recipe.final
        kwargs.update({"train_subset": final.train_subset, "num_epochs": final.num_epochs, "max_steps": -1})
        default_seed = final.seeds[0] if final.seeds else recipe.seed
    else:
        kwargs.update({k: v for k, v in recipe.fidelity_levels[-1].items() if v is not None})
    eval_split = recipe.evaluation.report_split if split == "report" else context.selection_split
    if eval_split is None:
        raise ValueError("`--split report` needs the recipe's `evaluation.report_split`.")
    kwargs.update(model_name_or_path=context.model, task=context.task, seed=default_seed if seed is None else seed,
                  eval_split=eval_split, eval_subset=context.eval_subset)
    return kwargs


def search_points(run: Path, space: SearchSpace, training: dict[str, Any]) -> list[dict[str, Any]]:
    """The points a `supernet` search in `run` returned for re-training (its oneshot.json, in order), after checking
    that its slices came from a super-PET trained as `training` says (the identity the --recipe's super-PET has or
    will have: else its warm starts and scores would be another super-PET's). Checked before anything trains."""
    oneshot, timings = run / "oneshot.json", run / "oneshot" / "supernet.json"
    if not oneshot.is_file() or not timings.is_file():
        raise FileNotFoundError(f"--points-from: {run} holds no finished `supernet` search (oneshot.json and "
                                "oneshot/supernet.json).")
    used = Path(json.loads(timings.read_text()).get("superpet") or run / "oneshot" / "superpet")
    if json.loads((used / "superpet.json").read_text())["training"] != training:
        raise ValueError(f"--points-from: the search used the super-PET {used}, trained otherwise than the "
                         "--recipe's super-PET: give the search's recipe (or one that trains its super-PET alike).")
    points = [result["details"]["x"] for result in json.loads(oneshot.read_text())["results"]]
    for x in points:
        space.key(x)   # a point of another space fails here, naming the variable
    return points


def standalone_id(run_kwargs: dict[str, Any]) -> str:
    """What a cached stand-alone result was trained with (budget, training settings, seed, scoring split)."""
    return json.dumps(run_kwargs, sort_keys=True, default=str)


def cached_rows(log: Path, identity: str) -> dict[str, dict[str, Any]]:
    """The rows of `log` (JSON lines, the last line of a key wins) whose stand-alone runs were trained as `identity`
    says: a row trained otherwise (another fidelity level, learning rates or seed, e.g. in a copied log) is not
    reused, so a changed recipe re-trains instead of comparing against runs of another budget. Rows written before
    this identity was recorded have none and are re-trained too."""
    rows = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            rows[row["key"]] = row
    return {key: row for key, row in rows.items() if row.get("standalone") == identity}


def run_jobs(jobs: list[tuple[Any, ...]], workers: int) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Yield (tag, result) for each (tag, run_kwargs, config, init_adapter) job as it finishes, in `workers`
    processes (spawned: CUDA cannot be forked) or inline when `workers` is 1."""
    if workers <= 1:
        for tag, *job in jobs:
            yield tag, standalone(*job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(standalone, *job): tag for tag, *job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def correlations(a: list[float], b: list[float]) -> dict[str, Any]:
    from scipy.stats import kendalltau, spearmanr

    if len(a) < 3:
        return {"n": len(a), "kendall_tau": None, "kendall_p": None, "spearman_rho": None, "spearman_p": None}
    tau, tau_p = kendalltau(a, b)
    rho, rho_p = spearmanr(a, b)
    return {"n": len(a), "kendall_tau": float(tau), "kendall_p": float(tau_p), "spearman_rho": float(rho),
            "spearman_p": float(rho_p)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="a search recipe (its space, training, fidelity, evaluation)")
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--n", type=int, default=20, help="configurations to compare (default 20)")
    parser.add_argument("--warm-start", action="store_true", help="also re-train each from its slice")
    parser.add_argument("--budget", choices=["level", "final"], default="level",
                        help="stand-alone training budget: the recipe's last fidelity level (default; what the search "
                             "re-trains its front at) or its `final:` section (training subset, epochs, first seed)")
    parser.add_argument("--score-full", action="store_true",
                        help="also score every slice on the whole selection split (besides settings.score_subset)")
    parser.add_argument("--learning-rate-scale", type=float, default=None,
                        help="super-PET training: multiply every per-block rate (default: the recipe's setting)")
    parser.add_argument("--scores-only", action="store_true",
                        help="train and score the super-PET only (no stand-alone runs): whether its slices leave the "
                             "majority class, before paying for N stand-alone runs; stand-alone results already in "
                             "OUT give a partial Kendall tau")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the stand-alone runs (default: the recipe's `seed`, or the first of `final.seeds` "
                             "with --budget final); with another seed, how well the budget agrees with itself")
    parser.add_argument("--split", choices=["selection", "report"], default="selection",
                        help="score the stand-alone runs on the recipe's selection split (default) or its report split "
                             "(with --budget final: the search's final stage)")
    parser.add_argument("--points-from", default=None,
                        help="a `supernet` search folder: its returned configurations instead of N random points")
    parser.add_argument("--workers", type=int, default=1,
                        help="stand-alone runs in parallel processes (they share one GPU); default 1")
    args = parser.parse_args(argv)

    recipe = load_recipe(args.recipe)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = resolve_model(recipe.model)
    space = SearchSpace.from_pretrained(model, recipe.space)
    settings = SupernetSettings.parse((recipe.algorithm.settings or {}) if recipe.algorithm.name == "supernet" else {})
    context = OneShotContext(
        model=model, task=recipe.task, space=space, training=recipe.training.run_kwargs(),
        fidelity=dict(recipe.fidelity_levels[0]), selection_split=recipe.evaluation.selection_split,
        eval_subset=recipe.evaluation.eval_subset, seed=recipe.seed, budgets=[], work_dir=out, progress=True,
    )
    scale = args.learning_rate_scale or settings.learning_rate_scale
    suffix = ("" if args.budget == "level" else f"-{args.budget}") + ("" if args.split == "selection" else "-report")
    if args.points_from:   # checked first: a mismatch is refused before the super-PET trains
        suffix += "-search"
        training = superpet_training(context, settings.sandwich(), superpet_run_kwargs(context, scale, settings.num_epochs))
        points = search_points(Path(args.points_from), space, training)
    else:
        points = sample_points(space, args.n, recipe.seed)
    start = time.perf_counter()
    manifest = train_superpet(context, settings.sandwich(), out / "superpet", scale, settings.num_epochs,
                              settings.students_in_one_pass())
    superpet = load_superpet(out / "superpet", model, recipe.task, space)
    max_length = int(context.training.get("max_length", 128))
    eval_batch = settings.eval_batch_size or 2 * int(context.training.get("batch_size", 16))
    scorer = SliceScorer.for_task(superpet, model, recipe.task, context.selection_split,
                                  settings.score_subset or context.eval_subset, max_length, eval_batch)
    full_scorer = (SliceScorer.for_task(superpet, model, recipe.task, context.selection_split, None, max_length,
                                        eval_batch) if args.score_full else None)
    print(f"super-PET ready in {time.perf_counter() - start:.0f} s (trained in {manifest['wall_time_s']:.0f} s)")

    superpet_id = json.dumps(manifest["training"], sort_keys=True)   # what the slices were trained with
    log = out / f"standalone{suffix}.jsonl"
    run_kwargs = standalone_kwargs(context, recipe, args.budget, args.seed, args.split)
    identity = standalone_id(run_kwargs)
    done = cached_rows(log, identity)
    rows, jobs = [], []
    for i, x in enumerate(points):   # slice scores are cheap: always recomputed
        key = space.key(x)
        config = space.decode(x)
        row = done.get(key) or {"key": key, "x": x, "config": config_to_dict(config), "parameters": space.cost(x),
                                "standalone": identity}
        started = time.perf_counter()
        row["superpet"] = scorer(x)
        row["scoring_s"] = time.perf_counter() - started
        row.pop("superpet_full", None)   # a cached row may hold another super-PET's
        if full_scorer is not None:
            row["superpet_full"] = full_scorer(x)
        full = f"  (whole split {row['superpet_full']:.4f})" if full_scorer is not None else ""
        print(f"slice {i + 1}/{len(points)}: {row['parameters']:>9,} params  super-PET {row['superpet']:.4f}{full}", flush=True)
        if "cold" not in row:
            jobs.append(((i, "cold"), run_kwargs, config, None))
        if row.get("warm_from") != superpet_id:   # a warm start from another super-PET's slice does not count here
            row.pop("warm", None)
        if args.warm_start and not args.scores_only and "warm" not in row:   # no slice saved for runs never run
            folder = save_slice(superpet, config, model, recipe.task, out / f"slices{suffix}" / str(i))
            jobs.append(((i, "warm"), run_kwargs, config, str(folder)))
        rows.append(row)
    if args.scores_only:
        return scores_only(out, rows, manifest, scale)
    for (i, which), result in run_jobs(jobs, args.workers):
        row = rows[i]
        row[which] = result
        if which == "warm":
            row["warm_from"] = superpet_id
        with open(log, "a") as handle:   # append-only; the last line of a key wins on resume
            handle.write(json.dumps(row) + "\n")
        print(f"[{i + 1}/{len(rows)}] {row['parameters']:>9,} params  super-PET {row['superpet']:.4f}  "
              f"{which} {result['metric']:.4f}  ({result['wall_time_s']:.0f} s)", flush=True)

    superpet_scores = [r["superpet"] for r in rows]
    cold = [r["cold"]["metric"] for r in rows]
    standalone_s = float(np.mean([r["cold"]["wall_time_s"] for r in rows]))
    results: dict[str, Any] = {
        "recipe": str(args.recipe), "model": recipe.model, "n": len(rows),
        "superpet_vs_standalone": correlations(superpet_scores, cold),
        "superpet_training_s": manifest["wall_time_s"], "superpet_metric": manifest.get("metric"),
        "learning_rate_scale": scale,
        "scoring_s_per_config": float(np.mean([r["scoring_s"] for r in rows])),
        "standalone_s_per_config": standalone_s,
        "superpet_training_in_standalone_runs": manifest["wall_time_s"] / standalone_s if standalone_s else None,
        "budget": args.budget, "points_from": args.points_from, "stand-alone": {k: run_kwargs.get(k) for k in ("train_subset", "num_epochs", "seed",
                                                                              "eval_split", "eval_subset")},
        "rows": [{k: r[k] for k in ("x", "parameters", "superpet", "superpet_full", "cold", "warm") if k in r}
                 for r in rows],
    }
    if all("superpet_full" in r for r in rows):
        results["superpet_full_vs_standalone"] = correlations([r["superpet_full"] for r in rows], cold)
    if all("warm" in r for r in rows):
        warm = [r["warm"]["metric"] for r in rows]
        results["cold_vs_warm"] = correlations(cold, warm)
        results["warm_gain_mean"] = float(np.mean(np.subtract(warm, cold)))
    (out / f"results{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    report = format_report(results)
    (out / f"results{suffix}.md").write_text(report)
    print(report)
    return results


def scores_only(out: Path, rows: list[dict[str, Any]], manifest: dict[str, Any],
                learning_rate_scale: float) -> dict[str, Any]:
    """`--scores-only`: the slices' scores, how many share the most common score (a dead super-PET gives every
    slice the majority class's accuracy; counted on the whole split when scored there), and Kendall tau on the rows
    with a stand-alone result already, on the same scores as the full report (`partial_full_vs_standalone` too with
    `--score-full`)."""
    scores = [r.get("superpet_full", r["superpet"]) for r in rows]
    values, counts = np.unique(np.round(scores, 6), return_counts=True)
    with_cold = [r for r in rows if "cold" in r]
    cold = [r["cold"]["metric"] for r in with_cold]
    results = {
        "superpet_metric": manifest.get("metric"), "superpet_training": manifest["training"],
        "superpet_training_s": manifest["wall_time_s"], "learning_rate_scale": learning_rate_scale,
        "n": len(rows), "most_common_score": float(values[counts.argmax()]), "at_most_common": int(counts.max()),
        "score_range": [float(min(scores)), float(max(scores))],
        "partial_vs_standalone": correlations([r["superpet"] for r in with_cold], cold) if with_cold else None,
        "n_with_standalone": len(with_cold),
        "rows": [{k: r[k] for k in ("x", "parameters", "superpet", "superpet_full", "cold") if k in r} for r in rows],
    }
    if with_cold and all("superpet_full" in r for r in with_cold):
        results["partial_full_vs_standalone"] = correlations([r["superpet_full"] for r in with_cold], cold)
    (out / "scores.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"largest configuration {_f(results['superpet_metric'])}; {results['at_most_common']} of {len(rows)} slices "
          f"at {results['most_common_score']:.4f}; range {min(scores):.4f}-{max(scores):.4f}")
    return results


def format_report(results: dict[str, Any]) -> str:
    c = results["superpet_vs_standalone"]
    lines = [
        f"# super-PET ranking vs stand-alone training ({results['model']}, N = {results['n']}, stand-alone at "
        f"{results['stand-alone']['train_subset']} x {results['stand-alone']['num_epochs']} epochs)", "",
        f"- Kendall tau {_f(c['kendall_tau'])} (p {_f(c['kendall_p'])}), Spearman rho {_f(c['spearman_rho'])} "
        f"(p {_f(c['spearman_p'])})",
        f"- super-PET trained with the per-block rates x {results['learning_rate_scale']}; its largest "
        f"configuration scores {_f(results['superpet_metric'])} on the selection split",
        f"- super-PET training {results['superpet_training_s']:.0f} s = "
        f"{_f(results['superpet_training_in_standalone_runs'])} stand-alone runs of "
        f"{results['standalone_s_per_config']:.0f} s; "
        f"scoring one slice {results['scoring_s_per_config']:.2f} s",
    ]
    if "superpet_full_vs_standalone" in results:
        f = results["superpet_full_vs_standalone"]
        lines.append(f"- slices scored on the whole split instead: Kendall tau {_f(f['kendall_tau'])} "
                     f"(p {_f(f['kendall_p'])}), Spearman rho {_f(f['spearman_rho'])}")
    if "cold_vs_warm" in results:
        w = results["cold_vs_warm"]
        lines.append(f"- warm start from the slice: mean gain {results['warm_gain_mean']:+.4f}; "
                     f"Kendall tau cold vs warm {_f(w['kendall_tau'])}")
    lines += ["", "| parameters | super-PET | stand-alone | warm start |", "|---:|---:|---:|---:|"]
    for r in sorted(results["rows"], key=lambda r: r["parameters"]):
        warm = f"{r['warm']['metric']:.4f}" if "warm" in r else ""
        lines.append(f"| {r['parameters']:,} | {r['superpet']:.4f} | {r['cold']['metric']:.4f} | {warm} |")
    return "\n".join(lines) + "\n"


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
