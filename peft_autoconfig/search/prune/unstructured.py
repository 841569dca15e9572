"""Unstructured pruning: single PET weights masked (`tuners/weight_masks.py`) inside the maximal structure.

Each budget's bool masks go to a new safetensors file under `<work_dir>/masks/run-<n>/` that its configuration names
in `weight_masks`, so the driver's re-training keeps them (a sparse "ticket" re-trained from a fresh initialisation).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ...tuners.mixed import MixedPetConfig
from ...tuners.units import UnitMasks


class UnstructuredPruner:
    """Single weights masked inside the maximal structure; each budget's masks go to a new safetensors file under
    `<work_dir>/masks/` that its configuration names in `weight_masks`."""

    def __init__(self, model: Any, shared: dict[str, Any], model_config: Any, work_dir: Path) -> None:
        from ...tuners.units import WeightImportance

        self.model = model
        self.importance = WeightImportance(model)
        self.kept = {key: torch.ones(p.shape, dtype=torch.bool) for key, p in self.importance.parameters.items()}
        self.shared = {**shared, "prefix_projection_size": 0}  # weight masks need a flat prefix
        self.model_config = model_config
        structure = UnitMasks(model)  # only to read the maximal per-layer sizes
        self.sizes = structure.sizes()
        structure.remove()
        self.mask_dir = fresh_directory(work_dir / "masks")

    def check_budget(self, smallest_budget: int) -> None:
        if smallest_budget < 1:
            raise ValueError(f"budget {smallest_budget} must keep at least one weight.")

    def cost(self) -> int:
        return int(sum(int(mask.sum()) for mask in self.kept.values()))

    def prune_to(self, target: int) -> None:
        from ...tuners.units import select_weights
        from ...tuners.weight_masks import apply_masks

        self.kept = select_weights(self.importance.scores, self.kept, target)
        apply_masks(self.model, self.kept, where="pruning masks")

    def trace(self) -> dict[str, Any]:
        return {"kept_per_block": kept_per_block(self.kept)}

    def snapshot(self, budget: int) -> tuple[MixedPetConfig, dict[str, Any]]:
        from ...tuners.weight_masks import save_mask_file

        path = save_mask_file(self.mask_dir / f"budget-{budget}.safetensors", self.kept)
        kwargs = {**self.shared, **{field: per_layer or 0 for field, per_layer in self.sizes.items()}}
        if not self.sizes["lora_rank"]:
            kwargs.pop("target_modules", None)
        config = MixedPetConfig(**kwargs, weight_masks=str(path.resolve()))
        total = kept_per_block({k: torch.ones_like(m) for k, m in self.kept.items()})
        kept = kept_per_block(self.kept)
        fraction = {name: kept[name] / total[name] for name in total}
        return config, {"kept_per_block": kept, "kept_fraction": fraction, "mask_file": str(path.resolve())}

    def close(self) -> None:
        """The masks stay on the model (it is discarded); nothing to undo."""


def kept_per_block(kept: dict[str, torch.Tensor]) -> dict[str, int]:
    """Non-zero weights per `<layer>.<block type>`, for diagnostics and the layer x block plot."""
    from ...tuners.naming import parameter_block_type

    out: dict[str, int] = {}
    for key, mask in kept.items():
        match = re.search(r"\.(\d+)\.", key)
        name = f"{match.group(1) if match else '?'}.{parameter_block_type(key)}"
        out[name] = out.get(name, 0) + int(mask.sum())
    return dict(sorted(out.items()))


def fresh_directory(root: Path) -> Path:
    """`root/run-<n>` for the first n not taken: an earlier, interrupted run's mask files are never overwritten."""
    n = 0
    while (root / f"run-{n}").exists():
        n += 1
    path = root / f"run-{n}"
    path.mkdir(parents=True)
    return path
