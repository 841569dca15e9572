"""`s3pet_positions.png`: which candidate positions survive at each budget (one panel per budget, layers x modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_positions(path: str | Path, positions: list[dict[str, Any]], kept: dict[int, list[str]],
                   probabilities: dict[int, list[float]]) -> None:
    """Grid of layers (rows) by module/target/size (columns) per budget: cell shade = keep probability at the end of the
    search, a black dot = kept in that budget's configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def column(p: dict[str, Any]) -> tuple[str, str, int]:
        return (p["module"], p["target"] or "", p["channels"][1])

    columns = sorted({column(p) for p in positions}, key=str)
    layers = sorted({p["layer"] for p in positions})
    budgets = sorted(kept)
    fig, axes = plt.subplots(1, len(budgets), figsize=(1.2 + 0.55 * len(columns) * len(budgets), 1.2 + 0.35 * len(layers)),
                             dpi=120, squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        grid = np.full((len(layers), len(columns)), np.nan)
        for p, prob in zip(positions, probabilities[budget]):
            grid[layers.index(p["layer"]), columns.index(column(p))] = prob
        ax.imshow(grid, vmin=0, vmax=1, cmap="Blues", aspect="auto")
        for p in positions:
            if p["name"] in kept[budget]:
                ax.plot(columns.index(column(p)), layers.index(p["layer"]), "ko", markersize=4)
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([f"{m}{'.' + t if t else ''} {size}" for m, t, size in columns], rotation=60, ha="right",
                           fontsize=6)
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels([str(layer) for layer in layers], fontsize=6)
        ax.set_ylabel("layer", fontsize=7)
        ax.set_title(f"budget {budget:,}", fontsize=8)
    fig.suptitle("S3PET: keep probability (shade) and kept positions (dots)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
