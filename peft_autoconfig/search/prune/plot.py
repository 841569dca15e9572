"""`prune_survival.png`: which share of each block survives at each budget (one heat map per budget, layer x block)."""

from __future__ import annotations

from pathlib import Path

from ..oneshot import OneShotResult

_BLOCK_ORDER = {"lora": 0, "serial": 1, "serial_adapter": 1, "parallel": 2, "parallel_adapter": 2, "prefix": 3, "bias": 4}


def plot_survival(path: Path, results: list[OneShotResult]) -> None:
    """One heat map per budget: the share of each block's units (or weights) kept, layer x block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(results, key=lambda r: r.budget or 0)
    names = sorted({name for r in ordered for name in r.details.get("kept_fraction", {})})
    if not names:
        return
    layers = sorted({int(n.split(".", 1)[0]) for n in names})
    blocks = sorted({n.split(".", 1)[1] for n in names}, key=lambda b: (_BLOCK_ORDER.get(b, 99), b))
    fig, axes = plt.subplots(1, len(ordered), figsize=(2.2 + 1.1 * len(blocks) * len(ordered), 0.4 * len(layers) + 1.6),
                             dpi=120, squeeze=False)
    for ax, result in zip(axes[0], ordered):
        fractions = result.details["kept_fraction"]
        grid = [[fractions.get(f"{layer}.{block}", float("nan")) for block in blocks] for layer in layers]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(blocks)), blocks, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=8)
        ax.set_title(f"budget {result.budget:,}\n({result.trainable_parameters:,} kept)", fontsize=9)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value == value:  # not NaN
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="w" if value < 0.6 else "k")
    axes[0][0].set_ylabel("layer")
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.02, label="share kept")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
