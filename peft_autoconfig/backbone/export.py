"""A sub-network as a physically smaller model that loads with plain `AutoModelFor*.from_pretrained`.

Dropped layers are removed (`num_hidden_layers`) and FFN units are sliced out of the up and down projections
(`intermediate_size`). A plain BERT/RoBERTa config has one `intermediate_size` for every layer, so layers that
keep fewer units than the widest kept layer are padded with zero units (zero weights and bias in, zero weights
out: they add exactly nothing). Transformers 5 removed head pruning (`prune_heads`, `config.pruned_heads`) and
ties the head size to `hidden_size / num_attention_heads`, so removed heads of an encoder are zeroed (their
query/key/value rows and output columns), not sliced: exact, but they still count as parameters.
`exported_parameters` is the exact parameter count of the exported model, computed without building it.
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


def _block_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters outside the blocks, parameters of one block)."""
    holder, name = block_list(model, family_for(model.config))
    blocks = getattr(holder, name)
    total = sum(p.numel() for p in model.parameters())
    per_block = sum(p.numel() for p in blocks[0].parameters())
    return total - per_block * len(blocks), per_block


def exported_width(sub: SubNetwork) -> int:
    """The exported `intermediate_size`: the widest kept layer's units (narrower layers are zero-padded)."""
    return max(len(units) for units in sub.units)


def exported_parameters(model: nn.Module, sub: SubNetwork) -> int:
    """Exact parameter count of `export_model(model, sub)`: the blocks kept at the exported FFN width."""
    dims = Dims.from_config(model.config)
    sub.validate(dims)
    outside, per_block = _block_parameters(model)
    removed_units = dims.intermediate_size - exported_width(sub)
    return outside + len(sub.layers) * (per_block - removed_units * (2 * dims.hidden_size + 1))


def effective_parameters(model: nn.Module, sub: SubNetwork) -> int:
    """Parameters the sub-network really uses: `exported_parameters` less zero padding and zeroed heads."""
    dims = Dims.from_config(model.config)
    width = exported_width(sub)
    padding = sum(width - len(units) for units in sub.units) * (2 * dims.hidden_size + 1)
    per_head = 4 * dims.head_dim * dims.hidden_size + 3 * dims.head_dim  # q, k, v rows and biases; output columns
    zeroed = sum(dims.num_heads - len(heads) for heads in sub.heads) * per_head
    return exported_parameters(model, sub) - padding - zeroed


def _rows(tensor: torch.Tensor, index: list[int], width: int) -> torch.Tensor:
    """`tensor[index]` padded with zero rows up to `width` rows."""
    out = tensor.new_zeros((width, *tensor.shape[1:]))
    out[: len(index)] = tensor[index]
    return out


def export_model(model: nn.Module, sub: SubNetwork) -> nn.Module:
    """A new model of the same class holding only `sub` (see the module docstring); `model` is not changed."""
    family = family_for(model.config)
    dims = Dims.from_config(model.config)
    sub.validate(dims)
    width = exported_width(sub)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(sub.layers)
    config.intermediate_size = width
    holder, name = block_list(model, family)
    prefix = f"{model.base_model_prefix}.{family.layers}." if model.base_model is not model else f"{family.layers}."
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    blocks = getattr(holder, name)
    for new_index, (layer, heads, units) in enumerate(zip(sub.layers, sub.heads, sub.units)):
        source, units = blocks[layer].state_dict(), list(units)
        sliced = {
            f"{family.intermediate}.weight": _rows(source[f"{family.intermediate}.weight"], units, width),
            f"{family.intermediate}.bias": _rows(source[f"{family.intermediate}.bias"], units, width),
            f"{family.ffn_output}.weight": _rows(source[f"{family.ffn_output}.weight"].T, units, width).T.contiguous(),
        }
        block = {k: sliced[k] if k in sliced else v.clone() for k, v in source.items()}
        removed = [h for h in range(dims.num_heads) if h not in set(heads)]
        for head in removed:
            columns = slice(head * dims.head_dim, (head + 1) * dims.head_dim)
            for projection in (family.query, family.key, family.value):
                block[f"{projection}.weight"][columns] = 0.0
                block[f"{projection}.bias"][columns] = 0.0
            block[f"{family.attention_output}.weight"][:, columns] = 0.0
        state.update({f"{prefix}{new_index}.{k}": v for k, v in block.items()})
    with torch.device("meta"):  # no random init (seconds for a real model): every weight comes from `state`
        small = type(model)(config)
    small.load_state_dict(state, strict=True, assign=True)
    sources = dict(model.named_buffers())
    for name, buffer in list(small.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers (position ids) are not in the state dict
            owner, _, leaf = name.rpartition(".")
            small.get_submodule(owner)._buffers[leaf] = sources[name].detach().clone()
    return small.to(next(model.parameters()).device).eval()


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
