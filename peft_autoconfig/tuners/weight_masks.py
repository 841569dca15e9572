"""Unstructured weight masks of PET blocks: one bool tensor per PET weight, saved with the adapter.

A masked weight holds a persistent bool buffer `<name>_mask` on the module that owns it (`A.weight_mask`,
`down.bias_mask`, `key_mask`, `delta_mask`), so `save_pretrained` writes it into adapter_model.safetensors next to the
weights (a bool tensor, never pickle) and `PeftModel.from_pretrained` reads it back. Masking zeroes the masked entries
in place and registers a gradient hook that zeroes their gradients, so they stay exactly zero through further
training (AdamW moves no entry whose gradient was always zero; decoupled weight decay keeps 0 at 0), without copying
weights or costing anything per forward pass. Because the zeros are real, `merge_and_unload` of a masked LoRA is
exact and the saved weights are already sparse; loading re-applies the masks anyway.

A mask file (`MixedPetConfig.weight_masks`) maps keys like
`bert.encoder.layer.0.attention.self.query.mixed_pet_lora.A.weight` (module path in the transformers model, no adapter name; a leading `base_model.model.` is accepted) to bool tensors
of the weight's shape. `get_peft_model` applies it; the parameter objective then counts the non-zero weights
(`count_trainable_parameters` subtracts the masked entries).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

MASK_SUFFIX = "_mask"
PEFT_PREFIX = "base_model.model."


def mask_key(parameter_name: str, adapter_name: str) -> str:
    """The mask-file key of a parameter name of the model (adapter name and PEFT wrapper prefix removed)."""
    key = parameter_name[len(PEFT_PREFIX):] if parameter_name.startswith(PEFT_PREFIX) else parameter_name
    return key.replace(f".{adapter_name}.", ".")


def load_mask_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The masks of a safetensors file; `ValueError` for a non-bool tensor, `FileNotFoundError` naming the path."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`weight_masks` file {str(path)!r} does not exist (a safetensors file of bool masks).")
    masks = load_file(str(path))
    for key, mask in masks.items():
        if mask.dtype != torch.bool:
            raise ValueError(f"`weight_masks` entry {key!r} in {path} must be a bool tensor, got {mask.dtype}.")
    return {(k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k): v for k, v in masks.items()}


def save_mask_file(path: str | Path, masks: dict[str, torch.Tensor]) -> Path:
    """Write `masks` (bool tensors) as safetensors; never overwrites an existing file (`FileExistsError`)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"mask file {path} already exists; masks are never overwritten, choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu", torch.bool).contiguous() for k, v in masks.items()}, str(path))
    return path


def masked_out(path: str | Path) -> int:
    """How many weights the masks of `path` remove (False entries)."""
    return sum(int(mask.numel() - mask.sum()) for mask in load_mask_file(path).values())


def pet_parameters(model: nn.Module, adapter_name: str) -> dict[str, tuple[nn.Module, str, nn.Parameter]]:
    """Mask-file key -> (owning module, parameter attribute name, parameter) of every PET parameter of the adapter."""
    from .naming import parameter_block_type

    out: dict[str, tuple[nn.Module, str, nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if parameter_block_type(full) is None or parameter_block_type(full) == "gate":
                continue
            if f".{adapter_name}." not in f".{full}.":
                continue
            out[mask_key(full, adapter_name)] = (module, name, parameter)
    return out


def apply_masks(
    model: nn.Module, masks: dict[str, torch.Tensor], adapter_name: str = "default", *, where: str = "weight_masks"
) -> int:
    """Install `masks` on the adapter's PET weights (see the module docstring); returns the weights masked out.

    Every key must name a PET weight of this adapter (else the config has no such block: `ValueError` listing a few
    keys it has), with the weight's shape (`ValueError` naming both shapes). A mask already installed is replaced.
    """
    params = pet_parameters(model, adapter_name)
    unknown = sorted(set(masks) - set(params))
    if unknown:
        known = sorted(params)[:4]
        raise ValueError(
            f"`{where}` has a mask for {unknown[0]!r}, a weight the adapter {adapter_name!r} does not have (its config has "
            f"no such block); masks must name the adapter's PET weights, e.g. {known}."
        )
    removed = 0
    for key, mask in masks.items():
        module, name, parameter = params[key]
        if tuple(mask.shape) != tuple(parameter.shape):
            raise ValueError(
                f"`{where}` mask {key!r} has shape {tuple(mask.shape)}, but the weight has shape {tuple(parameter.shape)}."
            )
        install_mask(module, name, mask.to(device=parameter.device, dtype=torch.bool))
        removed += int(mask.numel() - mask.sum())
    return removed


def install_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Register (or replace) the buffer `<name>_mask`, zero the masked entries and keep their gradients at zero."""
    buffer_name = name + MASK_SUFFIX
    parameter = getattr(module, name)
    if buffer_name in module._buffers:
        module._buffers[buffer_name].copy_(mask)
    else:
        module.register_buffer(buffer_name, mask.clone(), persistent=True)
        if not getattr(module, "_pet_mask_hooks", False):
            module.register_load_state_dict_post_hook(_reapply_after_load)
            module.register_forward_pre_hook(_attach_gradient_masks)
            module._pet_mask_hooks = True
        _attach_gradient_masks(module, ())
    with torch.no_grad():
        parameter.mul_(module._buffers[buffer_name].to(parameter.dtype))


def _attach_gradient_masks(module: nn.Module, args: tuple) -> None:
    """Give every masked parameter of `module` that requires grad a hook zeroing the masked gradients (once; done
    lazily because a frozen adapter made trainable later has no hook yet)."""
    for buffer_name, mask in module._buffers.items():
        if not buffer_name.endswith(MASK_SUFFIX):
            continue
        parameter = getattr(module, buffer_name[: -len(MASK_SUFFIX)])
        if parameter.requires_grad and not getattr(parameter, "_pet_mask_hooked", False):
            parameter.register_hook(lambda grad, m=module, b=buffer_name: grad * m._buffers[b].to(grad.dtype))
            parameter._pet_mask_hooked = True


def _reapply_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """After loading weights (and masks), zero the masked entries again: the mask wins over the loaded values."""
    with torch.no_grad():
        for buffer_name, mask in module._buffers.items():
            if buffer_name.endswith(MASK_SUFFIX):
                parameter = getattr(module, buffer_name[: -len(MASK_SUFFIX)])
                parameter.mul_(mask.to(parameter.dtype))


def current_masks(model: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The installed masks of the adapter, keyed for a mask file."""
    out = {}
    for key, (module, name, _) in pet_parameters(model, adapter_name).items():
        mask = module._buffers.get(name + MASK_SUFFIX)
        if mask is not None:
            out[key] = mask.detach().clone()
    return out


def check_state_dict_masks(state_dict: dict[str, torch.Tensor], where: str = "adapter") -> None:
    """Before loading a saved adapter: every mask must belong to a saved weight of the same shape, and be bool."""
    for key, mask in state_dict.items():
        if not key.endswith(MASK_SUFFIX):
            continue
        weight_key = key[: -len(MASK_SUFFIX)]
        if weight_key not in state_dict:
            raise ValueError(f"{where}: mask {key!r} belongs to no saved weight ({weight_key!r} is missing); the "
                             "config has no such block.")
        if mask.dtype != torch.bool:
            raise ValueError(f"{where}: mask {key!r} must be a bool tensor, got {mask.dtype}.")
        if tuple(mask.shape) != tuple(state_dict[weight_key].shape):
            raise ValueError(f"{where}: mask {key!r} has shape {tuple(mask.shape)}, but the weight has shape "
                             f"{tuple(state_dict[weight_key].shape)}.")


def install_from_config(model: nn.Module, path: str | None, adapter_name: str, keys: Iterable[str] = ()) -> None:
    """Apply the config's mask file after injection. A missing file only warns: a saved adapter brings its masks in
    its safetensors (all-true buffers are registered so that loading fills them)."""
    if path is None:
        return
    if Path(path).is_file():
        apply_masks(model, load_mask_file(path), adapter_name)
        return
    warnings.warn(
        f"`weight_masks` file {path!r} not found: the masks are expected from the adapter's safetensors "
        "(PeftModel.from_pretrained); a fresh get_peft_model trains without them.",
        stacklevel=3,
    )
    for module, name, parameter in pet_parameters(model, adapter_name).values():
        install_mask(module, name, torch.ones_like(parameter, dtype=torch.bool))
