"""The weight-sharing `supernet` search against a trial-by-trial search (NSGA-II, random, mobo) at equal wall time.

    python benchmarks/supernet_vs_search.py --supernet runs/rt_supernet --search runs/rt --out runs/supernet_vs_nsga2

The `supernet` search's wall time is its one-shot stage (super-PET training and slice scoring: `oneshot.json`) plus
the span of its stand-alone re-training (first start to last finish of its search trials in its journal), plus the
training time of a super-PET it reused (`algorithm.settings.superpet`, from that folder's `superpet.json`). The other
search's front *at that time* is the non-dominated set of the trials it had finished by then, counted from its first
trial's start, each configuration at the highest fidelity level it had reached: what its user would hold if they
stopped it there. Both fronts are scored with their own trials' selection metric and the normalised hypervolume of
`search_quality.py` (accuracy gain over 0.5 times the untrained share of the backbone), so the figures compare with
RESULTS.md's. The report says which fidelity level each point comes from: the two fronts' points may have been
trained at different budgets (the `supernet` search re-trains at the last level; a trial-by-trial search stopped
early holds mostly first-level points), and the hypervolume does not correct for that.

Writes OUT/supernet_vs_search.{json,md} and OUT/supernet_vs_search.png (both fronts, and the other search's
hypervolume against wall time with the `supernet` search's as a line).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from peft_autoconfig.search import read_journal
from peft_autoconfig.search.pareto import non_dominated

try:   # as a script (python benchmarks/...) and as a module (tests import benchmarks.supernet_vs_search)
    from search_quality import normalised_hv
except ImportError:   # pragma: no cover - the module path
    from benchmarks.search_quality import normalised_hv

SEARCH_KINDS = ("search", "promotion")
"""Journal kinds that belong to a search (final-stage and baseline runs come after it and are not compared)."""


def _time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def search_trials(out_dir: Path) -> list[dict[str, Any]]:
    """The finished search trials of a search folder, each with `start`/`end` (epoch seconds)."""
    trials = []
    for t in read_journal(Path(out_dir) / "journal.jsonl"):
        if t["kind"] in SEARCH_KINDS and t["status"] == "ok" and t.get("finished_at"):
            end = _time(t["finished_at"])
            trials.append({**t, "start": end - float(t.get("wall_time_s") or 0.0), "end": end})
    if not trials:
        raise ValueError(f"{out_dir}: its journal holds no finished search trial.")
    return sorted(trials, key=lambda t: t["end"])


def supernet_wall_time(out_dir: Path, trials: list[dict[str, Any]]) -> dict[str, float]:
    """The `supernet` search's wall time: its one-shot stage plus the span of its re-training."""
    path = Path(out_dir) / "oneshot.json"
    if not path.is_file():
        raise ValueError(f"`--supernet`: {path} is missing; pass the output folder of a `supernet` search.")
    document = json.loads(path.read_text())
    if document.get("algorithm") not in (None, "supernet"):
        raise ValueError(f"`--supernet`: {out_dir} is a {document['algorithm']!r} search, not `supernet`.")
    oneshot = float(document.get("wall_time_s") or 0.0)
    retraining = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    reused = reused_superpet_s(Path(out_dir))
    return {"oneshot_s": oneshot, "retraining_s": retraining, "superpet_reused_s": reused,
            "total_s": oneshot + retraining + reused}


def reused_superpet_s(out_dir: Path) -> float:
    """The training time of a super-PET the search reused (`algorithm.settings.superpet`) instead of training it in
    its own one-shot stage (0 otherwise): it counts, so that the comparison is at equal cost, not at equal reuse."""
    from peft_autoconfig.search.superpet import read_manifest

    summary = out_dir / "oneshot" / "supernet.json"
    if not summary.is_file():
        return 0.0
    folder = Path(json.loads(summary.read_text())["superpet"])
    if folder.resolve() == (out_dir / "oneshot" / "superpet").resolve():
        return 0.0
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"`--supernet`: the super-PET it reused, {folder}, has no manifest: its training time is "
                         f"unknown.")
    return float(manifest["wall_time_s"])


def front_of(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated (metric up, parameters down) among `trials`, each configuration at its highest level. A
    configuration is its point `x`, or its config where the journal has no point (a one-shot strategy's re-training
    journals `x` as null)."""
    latest: dict[str, dict[str, Any]] = {}
    for t in trials:
        key = json.dumps(t["x"] if t["x"] is not None else t["config"], sort_keys=True)
        if key not in latest or t["level"] >= latest[key]["level"]:
            latest[key] = t
    points = list(latest.values())
    if not points:
        return []
    F = np.array([[-float(t["metric"]), float(t["trainable_parameters"])] for t in points])
    return sorted((points[i] for i in non_dominated(F)), key=lambda t: t["trainable_parameters"])


def hv_of(front: list[dict[str, Any]], backbone: int) -> float:
    return normalised_hv([(float(t["metric"]), t["trainable_parameters"]) for t in front], backbone)


def compare(supernet_dir: Path, search_dir: Path, backbone: int) -> dict[str, Any]:
    """The comparison as a dict (see the module docstring)."""
    mine = search_trials(supernet_dir)
    budget = supernet_wall_time(supernet_dir, mine)
    other = search_trials(search_dir)
    start = min(t["start"] for t in other)
    by_then = [t for t in other if t["end"] - start <= budget["total_s"]]
    supernet_front, other_front = front_of(mine), front_of(by_then)
    curve = [(t["end"] - start, hv_of(front_of(other[:i + 1]), backbone)) for i, t in enumerate(other)]
    supernet_hv = hv_of(supernet_front, backbone)
    reach = next((elapsed for elapsed, value in curve if value >= supernet_hv - 1e-12), None)

    def rows(front: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"x": t["x"], "trainable_parameters": t["trainable_parameters"], "metric": float(t["metric"]),
                 "standard_error": t.get("standard_error"), "level": t["level"]} for t in front]

    return {
        "supernet": {"dir": str(supernet_dir), **budget, "front": rows(supernet_front), "hv": supernet_hv},
        "search": {"dir": str(search_dir), "trials_by_then": len(by_then), "trials": len(other),
                   "front": rows(other_front), "hv": hv_of(other_front, backbone),
                   "hv_final": curve[-1][1], "wall_time_s": curve[-1][0], "seconds_to_reach_supernet_hv": reach},
        "hv_curve": curve, "backbone_parameters": backbone,
    }


def format_report(results: dict[str, Any]) -> str:
    s, o = results["supernet"], results["search"]
    lines = [
        "# `supernet` search vs a trial-by-trial search at equal wall time", "",
        f"- `supernet` ({s['dir']}): {s['total_s']:.0f} s (one-shot stage {s['oneshot_s']:.0f} s + re-training "
        f"{s['retraining_s']:.0f} s" + (f" + the reused super-PET's training {s['superpet_reused_s']:.0f} s"
                                        if s.get("superpet_reused_s") else "") + f"); normalised HV {s['hv']:.5f}",
        f"- the other search ({o['dir']}) by then: {o['trials_by_then']} of {o['trials']} trials finished; HV "
        f"{o['hv']:.5f} (its final HV {o['hv_final']:.5f} after {o['wall_time_s']:.0f} s)",
        "- the other search reaches the `supernet` HV after "
        + (f"{o['seconds_to_reach_supernet_hv']:.0f} s" if o["seconds_to_reach_supernet_hv"] is not None
           else "never (within its run)"),
        "- points may come from different fidelity levels (column `level`); the HV does not correct for it", "",
        "| search | trainable params | selection metric +- SE | level |", "|---|---:|---:|---:|",
    ]
    for name, part in (("supernet", s), ("other", o)):
        for p in part["front"]:
            se = f" +- {p['standard_error']:.4f}" if p.get("standard_error") else ""
            lines.append(f"| {name} | {p['trainable_parameters']:,} | {p['metric']:.4f}{se} | {p['level']} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, part, marker in (("supernet", results["supernet"], "o"), ("other search, same wall time",
                                                                         results["search"], "s")):
        front = part["front"]
        left.step([p["trainable_parameters"] for p in front], [p["metric"] for p in front], where="post",
                  marker=marker, label=name)
    left.set_xscale("log")
    left.set_xlabel("trainable parameters")
    left.set_ylabel("selection metric")
    left.legend()
    elapsed, hv = zip(*results["hv_curve"])
    right.step(elapsed, hv, where="post", label="other search")
    right.axhline(results["supernet"]["hv"], color="C0", linestyle=":", label="supernet")
    right.axvline(results["supernet"]["total_s"], color="grey", linestyle="--", label="supernet wall time")
    right.set_xlabel("wall time (s)")
    right.set_ylabel("hypervolume (normalised)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--supernet", required=True, type=Path, help="output folder of a `supernet` search")
    parser.add_argument("--search", required=True, type=Path, help="output folder of a trial-by-trial search")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--backbone-parameters", type=int, default=None,
                        help="the backbone's parameter count (default: counted from the supernet search's model)")
    args = parser.parse_args(argv)
    backbone = args.backbone_parameters or backbone_of(args.supernet)
    results = compare(args.supernet, args.search, backbone)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "supernet_vs_search.json").write_text(json.dumps(results, indent=2) + "\n")
    report = format_report(results)
    (args.out / "supernet_vs_search.md").write_text(report)
    plot(results, args.out / "supernet_vs_search.png")
    print(report)
    return results


def backbone_of(out_dir: Path) -> int:
    """The backbone parameter count of the model in a search folder's journal header."""
    from transformers import AutoConfig

    from peft_autoconfig.search.baselines import backbone_parameter_count
    from peft_autoconfig.search.recipe import resolve_model

    header = json.loads((Path(out_dir) / "journal.jsonl").read_text().splitlines()[0])
    return backbone_parameter_count(AutoConfig.from_pretrained(resolve_model(header["recipe"]["model"])))


if __name__ == "__main__":
    main()
