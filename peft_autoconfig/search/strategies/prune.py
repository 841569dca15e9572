"""`algorithm.name: prune`: NAS by pruning a large PET architecture (Lawton et al., 2023).

1. Build the *maximal* configuration of the space (every module of `space.modules` at its largest size in every
   layer, the BitFit block included when the space lists `bias`; a flat prefix) and train it for the one-shot stage's
   budget (`context.fidelity`) with the recipe's training settings, through `transformers.Trainer`.
2. Score every structured unit (`tuners/units.py`: LoRA rank, adapter bottleneck unit, prefix token, a layer's bias
   block, and each whole block in a layer) by first-order importance `sum |theta * grad|`, accumulated over the
   optimiser steps by a Trainer callback.
3. Prune iteratively: each step keeps at least `keep_fraction` of the current parameters (never less than the next
   budget), chosen greedily by importance per parameter; the units are masked by hooks (no weight copied), then
   the model re-trains for `retrain_steps` steps, which also accumulates the scores of the next step.
4. On reaching each budget (largest first), read off a standard per-layer `MixedPetConfig` (sizes = surviving units)
   and, with `evaluate`, its score on the selection split. The configurations are nested: each budget's structure
   contains the next smaller one's. The driver re-trains each from scratch.

With `unstructured: true` the units are single PET weights instead (importance `|theta * grad|` per weight, the
globally least important removed), the maximal structure is kept, and each budget's bool masks are written to a new
safetensors file under `<work_dir>/masks/run-<n>/` that the configuration names (`MixedPetConfig.weight_masks`): the
re-training keeps the masks (a sparse "ticket" re-trained from a fresh initialisation), and the parameter objective
counts the non-zero weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from pydantic import Field

from ...front import config_to_dict
from ...tuners.mixed import MixedPetConfig
from ...tuners.plan import count_trainable_parameters
from ...tuners.units import KIND_FIELDS, GroupKey, UnitGroup, UnitImportance, UnitMasks, importance_callback
from ..oneshot import OneShotContext, OneShotResult, OneShotStrategy
from ..schema import RecipeModel
from .base import register_strategy

TRACE_FILE = "prune_trace.json"
SURVIVAL_PLOT = "prune_survival.png"


class PruneSettings(RecipeModel):
    """`algorithm.settings` of `prune`.

    Args:
        keep_fraction: each pruning step keeps at least this share of the current trainable parameters (0.5 halves
            the architecture per step; smaller = fewer, coarser steps).
        retrain_steps: optimiser steps of re-training after each pruning step (they also accumulate the next step's
            importance); None = a quarter of the one-shot stage's steps, at least 1.
        evaluate: score each budget's pruned model on the selection split (`OneShotResult.score`).
        unstructured: prune single weights instead of structures: importance per weight, the maximal structure kept,
            a bool mask per PET weight saved to a safetensors file that the configuration names (`weight_masks`);
            the parameter count is then the number of non-zero weights.
    """

    where: ClassVar[tuple[str, ...]] = ("algorithm", "settings")

    keep_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    retrain_steps: Optional[int] = Field(None, ge=1, strict=True)
    evaluate: bool = True
    unstructured: bool = False


# -- pure selection ----------------------------------------------------------------------------------------------------
def select_units(
    groups: dict[GroupKey, UnitGroup], scores: dict[GroupKey, torch.Tensor], fixed: dict[GroupKey, float], budget: int
) -> dict[GroupKey, torch.Tensor]:
    """The keep masks after pruning the current masks of `groups` down to at most `budget` parameters.

    Greedy on importance per parameter: candidates are every kept unit (`score / unit_cost`) and every block with kept
    units (`(sum of its kept units' scores + its fixed part's score) / its cost`), removed from the least important
    until the cost fits; a block's fixed parameters go with its last unit. A whole block is removed only while the
    excess is at least its size (so the result does not undershoot the budget by a block), else unit by unit. The
    last unit of the whole model is never removed; if it alone is over the budget, the single most important unit
    that fits is kept instead. Raises `ValueError` when no unit fits the budget.
    """
    alive = {key: group.alive.detach().cpu().clone() for key, group in groups.items()}
    counts = {key: int(mask.sum()) for key, mask in alive.items()}
    cost = sum(groups[key].cost(n) for key, n in counts.items())
    if cost <= budget:
        return alive
    candidates: list[tuple[float, int, GroupKey, int]] = []  # (ratio, order, group, unit index or -1 = block)
    for order, (key, group) in enumerate(sorted(groups.items())):
        kept = alive[key].nonzero().flatten().tolist()
        if not kept:
            continue
        for i in kept:
            candidates.append((float(scores[key][i]) / group.unit_cost, order, key, i))
        block_score = float(scores[key][alive[key]].sum()) + fixed[key]
        candidates.append((block_score / group.cost(len(kept)), order, key, -1))
    candidates.sort(key=lambda c: (c[0], c[1], c[3]))
    total_units = sum(counts.values())
    for _, _, key, index in candidates:
        if cost <= budget:
            break
        group = groups[key]
        removing = counts[key] if index == -1 else int(bool(alive[key][index]))
        if removing == 0 or removing >= total_units:
            continue  # already gone, or it would leave no unit at all
        before = group.cost(counts[key])
        if index == -1 and cost - before < budget:
            continue  # a whole block only while the excess is at least its size; its units can go one by one
        if index == -1:
            alive[key][:] = False
        else:
            alive[key][index] = False
        counts[key] -= removing
        total_units -= removing
        cost -= before - group.cost(counts[key])
    if cost > budget:
        return _best_single_unit(groups, scores, alive, budget)
    return alive


def _best_single_unit(
    groups: dict[GroupKey, UnitGroup], scores: dict[GroupKey, torch.Tensor], alive: dict[GroupKey, torch.Tensor],
    budget: int,
) -> dict[GroupKey, torch.Tensor]:
    fitting = [
        (float(scores[key][i]), key, i)
        for key, group in groups.items() if group.cost(1) <= budget
        for i in group.alive.detach().cpu().nonzero().flatten().tolist()
    ]
    if not fitting:
        cheapest = min(group.cost(1) for group in groups.values())
        raise ValueError(
            f"budget {budget:,} is below the smallest structure left to keep ({cheapest:,} parameters: one unit of "
            "one block); give a larger budget."
        )
    _, key, i = max(fitting, key=lambda f: (f[0], -f[1][0]))
    kept = {k: torch.zeros_like(mask) for k, mask in alive.items()}
    kept[key][i] = True
    return kept


def pruning_targets(current: int, budget: int, keep_fraction: float) -> list[int]:
    """The parameter targets of the steps from `current` down to `budget`: geometric by `keep_fraction`, then the
    budget itself."""
    targets = []
    while current > budget:
        current = max(budget, int(math.floor(current * keep_fraction)))
        targets.append(current)
    return targets


def maximal_config(space: Any) -> tuple[MixedPetConfig, dict[str, Any]]:
    """The space's largest configuration with per-layer sizes and a flat prefix (what is trained and pruned), and
    the keyword arguments shared by every configuration read off it (the space's fixed fields and targets)."""
    largest = space.decode(space.largest_point())
    shared: dict[str, Any] = dict(space.spec.fixed)
    shared["task_type"] = space.task_type
    if largest.target_modules is not None:
        shared["target_modules"] = list(largest.target_modules)
    if largest.bias_targets is not None:
        shared["bias_targets"] = list(largest.bias_targets)
    sizes = {
        field: {layer: largest.size(field, layer) for layer in range(space.num_layers) if largest.size(field, layer)}
        for field in KIND_FIELDS.values()
    }
    super_config = MixedPetConfig(**{**shared, **{f: s or 0 for f, s in sizes.items()}, "prefix_projection_size": 0})
    return super_config, shared


def config_from_masks(masks: UnitMasks, shared: dict[str, Any], model_config: Any) -> MixedPetConfig:
    """The standard `MixedPetConfig` of the kept units (per-layer sizes); its analytic count equals `masks.cost()`."""
    sizes = masks.sizes()
    kwargs = {**shared, **{field: per_layer or 0 for field, per_layer in sizes.items()}}
    if not sizes["lora_rank"]:
        kwargs.pop("target_modules", None)
    config = MixedPetConfig(**kwargs)
    count = count_trainable_parameters(config, model_config)
    if count != masks.cost():
        raise RuntimeError(f"pruned config counts {count:,} parameters but the kept units {masks.cost():,}: a bug.")
    return config


# -- the strategy ------------------------------------------------------------------------------------------------------
@register_strategy
class PruneStrategy(OneShotStrategy):
    """Lawton et al. (2023): train the maximal PET architecture, prune it by first-order importance to each budget."""

    name = "prune"
    budgeted = True
    settings_model = PruneSettings

    def search(self, context: OneShotContext) -> list[OneShotResult]:
        settings: PruneSettings = self.settings
        if not context.budgets:
            raise ValueError("algorithm 'prune' needs `budgets:` in the recipe.")
        super_config, shared = maximal_config(context.space)
        model_config = context.space.model_config
        maximum = count_trainable_parameters(super_config, model_config)
        check_budgets(context.budgets, maximum)
        session = _PruneSession(context, super_config)
        if settings.unstructured:
            pruner: Any = _UnstructuredPruner(session.model, shared, model_config, Path(context.work_dir))
        else:
            pruner = _StructuredPruner(session.model, shared, model_config)
        pruner.check_budget(context.budgets[0])
        callback = importance_callback(pruner.importance)
        initial_steps = session.train([callback])
        retrain_steps = settings.retrain_steps or max(1, initial_steps // 4)
        trace: list[dict[str, Any]] = [{"step": 0, "parameters": pruner.cost(), "trained_steps": initial_steps}]
        results: list[OneShotResult] = []
        bar = _progress(_expected_steps(maximum, context.budgets, settings.keep_fraction), context.progress)
        for budget in sorted(context.budgets, reverse=True):
            for target in pruning_targets(pruner.cost(), budget, settings.keep_fraction):
                pruner.prune_to(target)
                pruner.importance.reset()
                session.train([callback], retrain_steps)
                trace.append({"step": len(trace), "target": target, "parameters": pruner.cost(), **pruner.trace()})
                if bar is not None:
                    bar.update(1)
            config, details = pruner.snapshot(budget)
            count = count_trainable_parameters(config, model_config)
            if count != pruner.cost() or count > budget:
                raise RuntimeError(
                    f"pruned config counts {count:,} parameters, kept {pruner.cost():,}, budget {budget:,}: a bug."
                )
            results.append(OneShotResult(
                config=config_to_dict(config), trainable_parameters=count, budget=budget,
                score=session.evaluate() if settings.evaluate else None,
                details={**details, "maximal_parameters": maximum, "prune_steps": len(trace) - 1,
                         "unstructured": settings.unstructured},
            ))
        if bar is not None:
            bar.close()
        _write_trace(context.work_dir, trace, maximum, initial_steps, retrain_steps)
        plot_survival(Path(context.work_dir) / SURVIVAL_PLOT, results)
        pruner.close()
        return sorted(results, key=lambda r: r.budget)


class _StructuredPruner:
    """Units masked by hooks (`UnitMasks`); the configurations have per-layer sizes."""

    def __init__(self, model: Any, shared: dict[str, Any], model_config: Any) -> None:
        self.masks = UnitMasks(model)
        self.importance = UnitImportance(self.masks)
        self.shared, self.model_config = shared, model_config

    def check_budget(self, smallest_budget: int) -> None:
        smallest = min(group.cost(1) for group in self.masks.groups.values())
        if smallest_budget < smallest:
            raise ValueError(
                f"budget {smallest_budget:,} is below the smallest structure of the space ({smallest:,} parameters: "
                "one unit of one block); give a larger budget."
            )

    def cost(self) -> int:
        return self.masks.cost()

    def prune_to(self, target: int) -> None:
        for key, alive in select_units(self.masks.groups, self.importance.scores, self.importance.fixed, target).items():
            self.masks.set_alive(key, alive)

    def trace(self) -> dict[str, Any]:
        return {"sizes": self.masks.sizes()}

    def snapshot(self, budget: int) -> tuple[MixedPetConfig, dict[str, Any]]:
        details = {
            "sizes": {f: {str(k): v for k, v in s.items()} for f, s in self.masks.sizes().items()},
            "kept_fraction": {
                f"{layer}.{kind}": g.num_alive / g.size for (layer, kind), g in sorted(self.masks.groups.items())
            },
            "block_importance": _block_importance(self.masks, self.importance),
        }
        return config_from_masks(self.masks, self.shared, self.model_config), details

    def close(self) -> None:
        self.masks.remove()


class _UnstructuredPruner:
    """Single weights masked (`tuners/weight_masks.py`) inside the maximal structure; each budget's masks go to a new
    safetensors file under `<work_dir>/masks/` that its configuration names in `weight_masks`."""

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
        self.mask_dir = _fresh_directory(work_dir / "masks")

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
        return {"kept_per_block": _kept_per_block(self.kept)}

    def snapshot(self, budget: int) -> tuple[MixedPetConfig, dict[str, Any]]:
        from ...tuners.weight_masks import save_mask_file

        path = save_mask_file(self.mask_dir / f"budget-{budget}.safetensors", self.kept)
        kwargs = {**self.shared, **{field: per_layer or 0 for field, per_layer in self.sizes.items()}}
        if not self.sizes["lora_rank"]:
            kwargs.pop("target_modules", None)
        config = MixedPetConfig(**kwargs, weight_masks=str(path.resolve()))
        total = _kept_per_block({k: torch.ones_like(m) for k, m in self.kept.items()})
        kept = _kept_per_block(self.kept)
        fraction = {name: kept[name] / total[name] for name in total}
        return config, {"kept_per_block": kept, "kept_fraction": fraction, "mask_file": str(path.resolve())}

    def close(self) -> None:
        """The masks stay on the model (it is discarded); nothing to undo."""


def _kept_per_block(kept: dict[str, torch.Tensor]) -> dict[str, int]:
    """Non-zero weights per `<layer>.<block type>`, for diagnostics and the layer x block plot."""
    import re

    from ...tuners.naming import parameter_block_type

    out: dict[str, int] = {}
    for key, mask in kept.items():
        match = re.search(r"\.(\d+)\.", key)
        name = f"{match.group(1) if match else '?'}.{parameter_block_type(key)}"
        out[name] = out.get(name, 0) + int(mask.sum())
    return dict(sorted(out.items()))


def _fresh_directory(root: Path) -> Path:
    """`root/run-<n>` for the first n not taken: an earlier, interrupted run's mask files are never overwritten."""
    n = 0
    while (root / f"run-{n}").exists():
        n += 1
    path = root / f"run-{n}"
    path.mkdir(parents=True)
    return path


def _expected_steps(maximum: int, budgets: list[int], keep_fraction: float) -> int:
    total, current = 0, maximum
    for budget in sorted(budgets, reverse=True):
        targets = pruning_targets(current, budget, keep_fraction)
        total += len(targets)
        current = targets[-1] if targets else current
    return total


def check_budgets(budgets: list[int], maximum: int) -> None:
    """`ValueError` for a budget above the maximal configuration (the recipe check catches it before too)."""
    above = [b for b in budgets if b > maximum]
    if above:
        raise ValueError(
            f"budgets {above} are above the maximal configuration of the space ({maximum:,} trainable parameters); "
            f"allowed: 1 .. {maximum:,}."
        )


def _block_importance(masks: UnitMasks, importance: UnitImportance) -> dict[str, float]:
    """Accumulated importance of the kept units per `<layer>.<kind>` (the latest scoring window), for diagnostics."""
    return {
        f"{layer}.{kind}": float(importance.scores[(layer, kind)][group.alive.cpu()].sum())
        for (layer, kind), group in sorted(masks.groups.items()) if group.num_alive
    }


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


_BLOCK_ORDER = {"lora": 0, "serial": 1, "serial_adapter": 1, "parallel": 2, "parallel_adapter": 2, "prefix": 3, "bias": 4}


def _write_trace(work_dir: Path, trace: list[dict[str, Any]], maximum: int, initial: int, retrain: int) -> None:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    payload = {"maximal_parameters": maximum, "initial_steps": initial, "retrain_steps": retrain, "steps": trace}
    (work_dir / TRACE_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def _progress(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="pruning steps", unit="step", dynamic_ncols=True)


class _PruneSession:
    """One model trained in several Trainer windows (the runner's data, optimiser groups and arguments)."""

    def __init__(self, context: OneShotContext, config: MixedPetConfig) -> None:
        from transformers import set_seed

        from ...training.model import apply_peft, load_model
        from ...training.runner import RunConfig, prepare_data
        from ...training.tasks import load_task

        self.work_dir = Path(context.work_dir) / "trainer"
        self.run_config = RunConfig(
            model_name_or_path=context.model, task=context.task, peft_config=config, seed=context.seed,
            eval_subset=context.eval_subset, eval_split=context.selection_split, show_progress=context.progress,
            save_adapter=False, **{**context.training, **context.fidelity},
        )
        task = load_task(context.task)
        self.data = prepare_data(self.run_config, task)
        set_seed(context.seed)
        model = load_model(context.model, self.data.num_labels, self.data.tokenizer, task.label_names)
        self.model = apply_peft(model, config)
        self.trainer: Any = None

    def train(self, callbacks: list[Any], max_steps: Optional[int] = None) -> int:
        """Train for the one-shot budget (or `max_steps`); returns the number of optimiser steps taken."""
        from ...training.callbacks import TrainingDiverged
        from ...training.runner import build_trainer, training_arguments

        config = self.run_config if max_steps is None else replace(self.run_config, max_steps=max_steps)
        args = training_arguments(config, str(self.work_dir))
        trainer = build_trainer(config, self.model, self.data, args, tuple(callbacks))
        output = trainer.train()
        if not math.isfinite(float(output.training_loss)):
            raise TrainingDiverged(f"pruning: training loss is {output.training_loss}; lower the learning rates.")
        self.trainer = trainer
        return int(trainer.state.global_step)

    def evaluate(self) -> float:
        metrics = self.trainer.evaluate()
        name = self.data.task.metric_names[0]
        return float(metrics[f"eval_{name}"])


__all__ = ["PruneSettings", "PruneStrategy", "check_budgets", "config_from_masks", "maximal_config", "select_units"]
