"""Fixed-rule pruning baselines at a given exported size, to compare the searched front against.

- ``drop_top_layers``: keep the bottom layers at full width, as many as fit the size (Sajjad et al.'s top-layer
  dropping; DistilBERT-style depth reduction without its distillation);
- ``importance``: keep every layer and, in each layer, the most important FFN units (and heads where the export can
  slice them, see `export.head_plan`), one width for every layer (a narrower layer would be zero-padded to the
  widest, saving nothing), as wide as fits the size. Importance is Michel et al.'s first-order (Taylor) score,
  the mean absolute gradient of the loss with respect to a mask on the unit or head (`taylor_importance`), or the
  weight magnitude (`magnitude_importance`).

Both return a `SubNetwork`, so they are scored, exported and journaled exactly like the searched points. Sizes are
exported parameters (`export.exported_parameters`); a baseline is the largest of its rule that is not larger than
the target, or the rule's smallest network when even that is larger (check `exported_parameters` against the target).
`torch-pruning` was not used: it reshapes modules in place, which plain `from_pretrained` cannot load back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Optional

import torch
from torch import nn

from .export import exported_parameters, sliced_heads
from .masking import block_list, transformers_model
from .space import Dims, SubNetwork, family_for

BASELINE_RULES: tuple[str, ...] = ("drop_top_layers", "importance")
IMPORTANCE_KINDS: tuple[str, ...] = ("taylor", "magnitude")


@dataclass(frozen=True)
class Importance:
    """Scores per layer: `heads[layer, head]`, `units[layer, unit]` (higher = more important)."""

    heads: torch.Tensor
    units: torch.Tensor

    def top(self, layer: int, n_heads: int, n_units: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The `n_heads` most important heads and `n_units` most important units of `layer`, in index order."""
        heads = torch.argsort(self.heads[layer], descending=True, stable=True)[:n_heads]
        units = torch.argsort(self.units[layer], descending=True, stable=True)[:n_units]
        return tuple(sorted(heads.tolist())), tuple(sorted(units.tolist()))


def _largest_fitting(sizes: Iterable[int], parameters, target: int) -> int:
    """The largest size whose network has at most `target` parameters (binary search; `parameters` is monotone),
    else the smallest size."""
    sizes = sorted(sizes)
    low, high, best = 0, len(sizes) - 1, sizes[0]
    while low <= high:
        middle = (low + high) // 2
        if parameters(sizes[middle]) <= target:
            best, low = sizes[middle], middle + 1
        else:
            high = middle - 1
    return best


def _check_target(target: int) -> int:
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ValueError(f"`target_parameters` must be a positive int (exported parameters), got {target!r}.")
    return target


def drop_top_layers(model: nn.Module, target_parameters: int) -> SubNetwork:
    """The bottom layers at full width, as many as keep the export at most `target_parameters` (at least one)."""
    _check_target(target_parameters)
    dims = Dims.from_config(model.config)

    def network(n: int) -> SubNetwork:
        return SubNetwork.uniform(dims, n, dims.num_heads, dims.intermediate_size)

    n = _largest_fitting(range(1, dims.num_layers + 1), lambda n: exported_parameters(model, network(n)),
                         target_parameters)
    return network(n)


def _head_count(dims: Dims, fraction: float, sliceable: bool) -> int:
    """Heads kept at `fraction` of the width: all of them when the export cannot slice heads (zeroed heads save
    nothing), else the nearest whole number of key/value groups (at least one)."""
    if not sliceable:
        return dims.num_heads
    group = dims.num_heads // dims.num_key_value_heads
    return max(group, group * round(fraction * dims.num_heads / group))


def importance_pruning(model: nn.Module, target_parameters: int, importance: Importance) -> SubNetwork:
    """Every layer, each keeping its most important units (and heads, where the export slices them) at one
    width for all layers: the widest that keeps the export at most `target_parameters`."""
    _check_target(target_parameters)
    dims = Dims.from_config(model.config)
    expected = (dims.num_layers, dims.num_heads), (dims.num_layers, dims.intermediate_size)
    if (tuple(importance.heads.shape), tuple(importance.units.shape)) != expected:
        raise ValueError(f"`importance` has shapes {tuple(importance.heads.shape)} and {tuple(importance.units.shape)};"
                         f" this model needs {expected[0]} (heads) and {expected[1]} (units).")
    sliceable = sliced_heads(model)

    def network(width: int) -> SubNetwork:
        n_heads = _head_count(dims, width / dims.intermediate_size, sliceable)
        kept = [importance.top(layer, n_heads, width) for layer in range(dims.num_layers)]
        heads = [h for h, _ in kept]
        if sliceable:  # whole key/value groups, so that the export slices them: the groups of the best heads
            group = dims.num_heads // dims.num_key_value_heads
            heads = [_whole_groups(importance.heads[layer], n_heads, group) for layer in range(dims.num_layers)]
        return SubNetwork(tuple(range(dims.num_layers)), tuple(heads), tuple(u for _, u in kept))

    width = _largest_fitting(range(1, dims.intermediate_size + 1), lambda w: exported_parameters(model, network(w)),
                             target_parameters)
    return network(width)


def _whole_groups(scores: torch.Tensor, n_heads: int, group: int) -> tuple[int, ...]:
    """The `n_heads // group` key/value groups with the highest summed head scores, as query head indices."""
    totals = scores.reshape(-1, group).sum(dim=1)
    groups = sorted(torch.argsort(totals, descending=True, stable=True)[: n_heads // group].tolist())
    return tuple(head for g in groups for head in range(g * group, (g + 1) * group))


def taylor_importance(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> Importance:
    """Michel et al.'s head importance, extended to FFN units: the absolute gradient of the task loss with respect
    to a mask of ones on each head (input of the attention output projection) and unit (input of the FFN down
    projection), summed over `batches` (each with `labels`). The model's weights and gradients are not changed."""
    family, dims = family_for(model.config), Dims.from_config(model.config)
    holder, name = block_list(model, family)
    blocks = getattr(holder, name)
    device = next(model.parameters()).device
    heads = torch.ones(dims.num_layers, dims.num_heads, requires_grad=True, device=device)
    units = torch.ones(dims.num_layers, dims.intermediate_size, requires_grad=True, device=device)
    scores = Importance(torch.zeros(dims.num_layers, dims.num_heads), torch.zeros(dims.num_layers, dims.intermediate_size))

    def hook(mask: torch.Tensor, repeat: int):
        def apply(module: nn.Module, args: tuple) -> tuple:
            factor = mask.repeat_interleave(repeat) if repeat > 1 else mask
            return (args[0] * factor.to(args[0].dtype), *args[1:])
        return apply

    handles = []
    for i, block in enumerate(blocks):
        attention_output = block.get_submodule(family.attention_output)
        handles.append(attention_output.register_forward_pre_hook(hook(heads[i], dims.head_dim)))
        handles.append(block.get_submodule(family.ffn_output).register_forward_pre_hook(hook(units[i], 1)))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = {key: value.to(device) for key, value in batch.items()}
            loss = transformers_model(model)(**batch).loss
            head_grad, unit_grad = torch.autograd.grad(loss, [heads, units])
            scores.heads.add_(head_grad.abs().cpu())
            scores.units.add_(unit_grad.abs().cpu())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return scores


def magnitude_importance(model: nn.Module) -> Importance:
    """Weight magnitude: the L2 norm of each head's query/key/value rows and output columns, and of each unit's up
    projection rows and down projection column (key/value rows shared by grouped-query heads count for each)."""
    family, dims = family_for(model.config), Dims.from_config(model.config)
    holder, name = block_list(model, family)
    group = dims.num_heads // dims.num_key_value_heads
    heads, units = [], []
    with torch.no_grad():
        for block in getattr(holder, name):
            def rows(path: str, size: int, repeat: int = 1) -> torch.Tensor:
                weight = block.get_submodule(path).weight.float()
                per = weight.reshape(-1, size, weight.shape[1]).pow(2).sum(dim=(1, 2))
                return per.repeat_interleave(repeat)

            output = block.get_submodule(family.attention_output).weight.float()
            columns = output.reshape(output.shape[0], -1, dims.head_dim).pow(2).sum(dim=(0, 2))
            head = rows(family.query, dims.head_dim) + rows(family.key, dims.head_dim, group) + rows(
                family.value, dims.head_dim, group) + columns
            unit = sum(block.get_submodule(p).weight.float().pow(2).sum(dim=1) for p in family.intermediate)
            unit = unit + block.get_submodule(family.ffn_output).weight.float().pow(2).sum(dim=0)
            heads.append(head.sqrt())
            units.append(unit.sqrt())
    return Importance(torch.stack(heads), torch.stack(units))


def baseline_subnetwork(
    rule: Literal["drop_top_layers", "importance"], model: nn.Module, target_parameters: int,
    importance: Optional[Importance] = None,
) -> SubNetwork:
    """The `rule`'s sub-network at `target_parameters` (see the module docstring)."""
    if rule == "drop_top_layers":
        return drop_top_layers(model, target_parameters)
    if rule == "importance":
        if importance is None:
            raise ValueError("the `importance` baseline needs `importance` scores (taylor_importance or "
                             "magnitude_importance).")
        return importance_pruning(model, target_parameters, importance)
    raise ValueError(f"`baselines.rules` entry {rule!r} is not allowed; allowed: {list(BASELINE_RULES)}.")
