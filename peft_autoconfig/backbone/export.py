"""A sub-network as a physically smaller model that loads with plain `AutoModelFor*.from_pretrained`.

Dropped layers are removed (`num_hidden_layers`) and FFN units are sliced out of the up and down projections
(`intermediate_size`). A plain config has one `intermediate_size` for every layer, so layers that keep fewer
units than the widest kept layer are padded with zero units (zero weights and bias in, zero weights out: they add
exactly nothing).

Heads: a plain config also has one head count for every layer, and transformers 5 removed head pruning
(`prune_heads`, `config.pruned_heads`). Where the config has `head_dim` (Llama), heads are sliced like units: every
exported layer keeps as many key/value groups as the layer that touches the most (`head_plan`), each layer its own
groups, padded with groups whose query rows, key/value rows and output columns are zero; query heads of a kept
group that the sub-network removed are zeroed (their key/value head is shared). Where the head size is tied to
`hidden_size / num_attention_heads` (BERT, RoBERTa: `BertSelfAttention.attention_head_size`), fewer heads would
mean larger heads, so removed heads are zeroed (query, key and value rows, output columns), not sliced: exact, but
still stored and computed. `exported_parameters` is the exact parameter count of the exported model, computed
without building it; `effective_parameters` leaves out the zero padding and the zeroed heads.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .masking import block_list
from .space import Dims, SubNetwork, family_for


class ExportFolderExistsError(FileExistsError, ValueError):
    """The export folder exists (a user error, reported before any training)."""


def _blocks(model: nn.Module) -> nn.ModuleList:
    holder, name = block_list(model, family_for(model.config))
    return getattr(holder, name)


def _linear_size(linear: nn.Linear, rows: bool) -> int:
    """Parameters of one output row (`rows`) or one input column of `linear` (a row has its bias entry)."""
    if rows:
        return linear.in_features + (linear.bias is not None)
    return linear.out_features


def unit_parameters(model: nn.Module) -> int:
    """Parameters of one FFN unit: its rows of every up projection and its column of the down projection."""
    family, block = family_for(model.config), _blocks(model)[0]
    ups = sum(_linear_size(block.get_submodule(name), rows=True) for name in family.intermediate)
    return ups + _linear_size(block.get_submodule(family.ffn_output), rows=False)


def zeroed_projections(model: nn.Module) -> tuple[str, ...]:
    """The projections whose rows of a removed head are zeroed when heads are not sliced: query (and key/value
    without grouped-query attention; a key/value head shared by several query heads stays)."""
    family, dims = family_for(model.config), Dims.from_config(model.config)
    return (family.query,) if dims.num_key_value_heads != dims.num_heads else (family.query, family.key, family.value)


def head_parameters(model: nn.Module) -> int:
    """Parameters zeroed per removed head: its rows of `zeroed_projections`, its columns of the output projection."""
    family, block, dims = family_for(model.config), _blocks(model)[0], Dims.from_config(model.config)
    rows = sum(_linear_size(block.get_submodule(name), rows=True) for name in zeroed_projections(model))
    return dims.head_dim * (rows + _linear_size(block.get_submodule(family.attention_output), rows=False))


def sliced_heads(model: nn.Module) -> bool:
    """Whether `export_model` slices heads (the config has `head_dim`) rather than zeroing them."""
    return family_for(model.config).head_dim_in_config


def _groups(heads: tuple[int, ...], group: int) -> list[int]:
    """The key/value heads that the query `heads` read (`group` query heads per key/value head)."""
    return sorted({head // group for head in heads})


def head_plan(model: nn.Module, sub: SubNetwork) -> Optional[list[tuple[int, ...]]]:
    """Per kept layer, the key/value groups its exported layer holds (None where heads are zeroed, not sliced):
    the groups its heads read, padded with unused groups up to the widest layer's count."""
    if not sliced_heads(model):
        return None
    dims = Dims.from_config(model.config)
    group = dims.num_heads // dims.num_key_value_heads
    touched = [_groups(heads, group) for heads in sub.heads]
    width = max(len(groups) for groups in touched)
    plan = []
    for groups in touched:
        unused = [g for g in range(dims.num_key_value_heads) if g not in groups]
        plan.append(tuple(sorted(groups + unused[: width - len(groups)])))
    return plan


def _head_sizes(model: nn.Module) -> tuple[int, int]:
    """(parameters of one query head: query rows and output columns, of one key/value head: key and value rows)."""
    family, block, dims = family_for(model.config), _blocks(model)[0], Dims.from_config(model.config)
    query = _linear_size(block.get_submodule(family.query), rows=True)
    output = _linear_size(block.get_submodule(family.attention_output), rows=False)
    key_value = sum(_linear_size(block.get_submodule(name), rows=True) for name in (family.key, family.value))
    return dims.head_dim * (query + output), dims.head_dim * key_value


def exported_width(sub: SubNetwork) -> int:
    """The exported `intermediate_size`: the widest kept layer's units (narrower layers are zero-padded)."""
    return max(len(units) for units in sub.units)


def exported_parameters(model: nn.Module, sub: SubNetwork) -> int:
    """Exact parameter count of `export_model(model, sub)`: the blocks kept at the exported FFN and head widths."""
    dims = Dims.from_config(model.config)
    sub.validate(dims)
    blocks = _blocks(model)
    per_block = sum(p.numel() for p in blocks[0].parameters())
    outside = sum(p.numel() for p in model.parameters()) - per_block * len(blocks)
    removed = (dims.intermediate_size - exported_width(sub)) * unit_parameters(model)
    plan = head_plan(model, sub)
    if plan is not None:
        kept = len(plan[0])
        query_head, key_value_head = _head_sizes(model)
        group = dims.num_heads // dims.num_key_value_heads
        removed += (dims.num_heads - kept * group) * query_head + (dims.num_key_value_heads - kept) * key_value_head
    return outside + len(sub.layers) * (per_block - removed)


def effective_parameters(model: nn.Module, sub: SubNetwork) -> int:
    """Parameters the sub-network really uses: `exported_parameters` less zero padding and zeroed heads."""
    dims = Dims.from_config(model.config)
    width = exported_width(sub)
    zeroed = sum(width - len(units) for units in sub.units) * unit_parameters(model)
    plan = head_plan(model, sub)
    if plan is None:
        zeroed += sum(dims.num_heads - len(h) for h in sub.heads) * head_parameters(model)
    else:
        query_head, key_value_head = _head_sizes(model)
        group = dims.num_heads // dims.num_key_value_heads
        for heads, groups in zip(sub.heads, plan):
            zeroed += (len(groups) * group - len(heads)) * query_head
            zeroed += (len(groups) - len(_groups(heads, group))) * key_value_head
    return exported_parameters(model, sub) - zeroed


def _rows(tensor: torch.Tensor, index: list[int], width: int) -> torch.Tensor:
    """`tensor[index]` padded with zero rows up to `width` rows."""
    out = tensor.new_zeros((width, *tensor.shape[1:]))
    out[: len(index)] = tensor[index]
    return out


def _head_rows(heads: list[int], head_dim: int) -> list[int]:
    return [head * head_dim + j for head in heads for j in range(head_dim)]


def _zero_heads(block: dict[str, torch.Tensor], heads: list[int], head_dim: int, rows: tuple[str, ...],
                output: str) -> None:
    """Zero `heads` (indices into `block`'s current projections) in place: their rows of `rows`, their output
    columns."""
    index = _head_rows(heads, head_dim)
    for projection in rows:
        for suffix in ("weight", "bias"):
            if f"{projection}.{suffix}" in block:
                block[f"{projection}.{suffix}"][index] = 0.0
    block[f"{output}.weight"][:, index] = 0.0


def _slice_heads(model: nn.Module, block: dict[str, torch.Tensor], heads: tuple[int, ...],
                 groups: tuple[int, ...]) -> None:
    """Keep only the key/value `groups` (and their query heads) in `block`, in place, then zero the query heads
    the sub-network removed and the key/value heads no kept query head reads (padding)."""
    family, dims = family_for(model.config), Dims.from_config(model.config)
    group = dims.num_heads // dims.num_key_value_heads
    queries = [g * group + r for g in groups for r in range(group)]
    query_rows, key_value_rows = _head_rows(queries, dims.head_dim), _head_rows(list(groups), dims.head_dim)
    for projection, rows in ((family.query, query_rows), (family.key, key_value_rows), (family.value, key_value_rows)):
        for suffix in ("weight", "bias"):
            if f"{projection}.{suffix}" in block:
                block[f"{projection}.{suffix}"] = block[f"{projection}.{suffix}"][rows].clone()
    output = f"{family.attention_output}.weight"
    block[output] = block[output][:, query_rows].contiguous()
    removed = [i for i, head in enumerate(queries) if head not in heads]
    _zero_heads(block, removed, dims.head_dim, (family.query,), family.attention_output)
    unused = [i for i, g in enumerate(groups) if g not in _groups(heads, group)]
    for projection in (family.key, family.value):
        for suffix in ("weight", "bias"):
            if f"{projection}.{suffix}" in block:
                block[f"{projection}.{suffix}"][_head_rows(unused, dims.head_dim)] = 0.0


def _slice_block(
    model: nn.Module, layer: int, heads: tuple[int, ...], units: tuple[int, ...], width: int,
    groups: Optional[tuple[int, ...]],
) -> dict:
    """The state dict of block `layer` with only `units` (zero-padded to `width`) and `heads` (sliced to the
    key/value `groups` if given, else the others zeroed)."""
    family, dims = family_for(model.config), Dims.from_config(model.config)
    source, units = _blocks(model)[layer].state_dict(), list(units)
    sliced = {}
    for name in family.intermediate:
        for suffix in ("weight", "bias"):
            if f"{name}.{suffix}" in source:
                sliced[f"{name}.{suffix}"] = _rows(source[f"{name}.{suffix}"], units, width)
    sliced[f"{family.ffn_output}.weight"] = _rows(source[f"{family.ffn_output}.weight"].T, units, width).T.contiguous()
    block = {k: sliced[k] if k in sliced else v.clone() for k, v in source.items()}
    if groups is not None:
        _slice_heads(model, block, heads, groups)
    else:
        removed = sorted(set(range(dims.num_heads)) - set(heads))
        _zero_heads(block, removed, dims.head_dim, zeroed_projections(model), family.attention_output)
    return block


def export_model(model: nn.Module, sub: SubNetwork) -> nn.Module:
    """A new model of the same class holding only `sub` (see the module docstring); `model` is not changed."""
    family, dims = family_for(model.config), Dims.from_config(model.config)
    sub.validate(dims)
    width, plan = exported_width(sub), head_plan(model, sub)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(sub.layers)
    config.intermediate_size = width
    if plan is not None:
        config.head_dim = dims.head_dim
        config.num_key_value_heads = len(plan[0])
        config.num_attention_heads = len(plan[0]) * dims.num_heads // dims.num_key_value_heads
    prefix = f"{model.base_model_prefix}.{family.layers}." if model.base_model is not model else f"{family.layers}."
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    for new_index, (layer, heads, units) in enumerate(zip(sub.layers, sub.heads, sub.units)):
        block = _slice_block(model, layer, heads, units, width, plan[new_index] if plan is not None else None)
        state.update({f"{prefix}{new_index}.{k}": v for k, v in block.items()})
    with torch.device("meta"):  # no random init (seconds for a real model): every weight comes from `state`
        small = type(model)(config)
    small.load_state_dict(state, strict=True, assign=True)
    _fill_meta_tensors(small, model)
    small.tie_weights()
    return small.to(next(model.parameters()).device).eval()


def _fill_meta_tensors(small: nn.Module, model: nn.Module) -> None:
    """Copy from `model` what the state dict does not hold: non-persistent buffers (position ids, rotary
    frequencies) and plain tensor attributes (Llama's `original_inv_freq`), which are on the meta device."""
    sources = dict(model.named_buffers())
    for name, buffer in list(small.named_buffers()):
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            small.get_submodule(owner)._buffers[leaf] = sources[name].detach().clone()
    for name, module in small.named_modules():
        for attribute, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.is_meta:
                setattr(module, attribute, getattr(model.get_submodule(name), attribute).detach().clone())


def save_exported(
    model: nn.Module, sub: SubNetwork, directory: str | Path, tokenizer: Optional[Any] = None, overwrite: bool = False
) -> Path:
    """`export_model` saved as safetensors (plus the tokenizer) in `directory`, which must not exist unless
    `overwrite`."""
    directory = Path(directory)
    if directory.exists():
        if not overwrite:
            raise ExportFolderExistsError(f"export folder {directory} exists; choose another `--out` or remove it.")
        shutil.rmtree(directory)
    small = export_model(model, sub)
    small.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
