"""`pareto.png`: every trial (by fidelity level), the final front, and the baselines (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_front(
    path: str | Path,
    trials: list[dict[str, Any]],
    front: list[dict[str, Any]],
    baselines: list[dict[str, Any]] | None = None,
    metric_name: str = "metric",
    title: str | None = None,
    xlabel: str = "trainable parameters (PET blocks)",
) -> None:
    """Metric against trainable parameters (log scale); failed trials are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ok = [t for t in trials if t["status"] == "ok" and t.get("kind") in ("search", "promotion")]
    levels = sorted({t["level"] for t in ok})
    markers = "o^sDv"
    for level in levels:
        pts = [t for t in ok if t["level"] == level]
        ax.scatter(
            [t["trainable_parameters"] for t in pts], [t["metric"] for t in pts],
            s=22, alpha=0.45, marker=markers[level % len(markers)], label=f"trials, fidelity level {level}",
        )
    if front:
        ordered = sorted(front, key=lambda p: p["trainable_parameters"])
        ax.step(
            [p["trainable_parameters"] for p in ordered], [p["metric"] for p in ordered],
            where="post", color="black", linewidth=1.2, zorder=3,
        )
        ax.scatter(
            [p["trainable_parameters"] for p in ordered], [p["metric"] for p in ordered],
            s=60, marker="*", color="black", zorder=4, label="Pareto front",
        )
        for p in ordered:
            ax.annotate(p["name"], (p["trainable_parameters"], p["metric"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for b in baselines or []:
        value = b["metric"] if b.get("metric") is not None else (b.get("report") or {}).get("mean")
        if value is None:
            continue
        ax.scatter([b["trainable_parameters"]], [value], s=70, marker="X", color="crimson", zorder=5)
        ax.annotate(b["name"], (b["trainable_parameters"], value), textcoords="offset points", xytext=(4, -10),
                    fontsize=7, color="crimson")
    if baselines:
        ax.scatter([], [], s=70, marker="X", color="crimson", label="baselines")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric_name)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
