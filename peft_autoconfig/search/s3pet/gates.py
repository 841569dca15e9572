"""Gates on the super-configuration's blocks: each position's channels are scaled by its gate value z_i.

The layers are not rewritten; forward hooks on the blocks' own submodules do it. A position owns channels of its
block (see `positions`): LoRA ranks (the output of `A`, hooked), BitFit deltas (the block's output, hooked), adapter units (the output of the non-linearity
`act`, hooked, plus `up`'s bias, which belongs to the first position and is scaled by its z), prefix slots. So a
block whose positions all have z = 1 computes exactly its ungated output, and z = 0 removes exactly those channels.
A prefix is not called as a module; it takes its gates through the block's own gate slot (`PrefixKV.gate`, used by
UniPELT): a `PositionGate` returns one value per prefix slot as a per-position gate, so `PrefixKV.keys_values` adds
log(z) to the attention scores of each slot, which multiplies that slot's attention weight by z (0 removes it). The
hooks and gates own no parameters or buffers: state dicts and saved configs are unchanged, and
`GateHandles.remove()` restores the model.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from ...tuners.blocks import PrefixKV
from ...tuners.layer import located_pet_layers
from .positions import SuperConfiguration
from .shift import EPS, keep_probabilities

_KIND_OF_MODULE = {
    "lora": "lora", "serial_adapter": "serial", "parallel_adapter": "parallel", "prefix": "prefix", "bias": "bias"
}


class GateController:
    """The architecture parameters alpha (one per position) and the gate values z the hooks read.

    Not an `nn.Module` on purpose: alpha must never become a parameter of the PEFT model (the weight optimizer would
    train it). Modes: `sample` (search steps, differentiable or detached), `use_probabilities` (deterministic p,
    for scoring the super-configuration) and `set_mask` (a hard 0/1 structure, for scoring a discretisation).
    """

    def __init__(self, counts: tuple[int, ...] | list[int], budget: int, temperature: float = 1.0,
                 shift_detach: bool = True, device: torch.device | str = "cpu") -> None:
        self.counts = np.asarray(counts, dtype=np.float64)
        self.budget = int(budget)
        self.temperature = float(temperature)
        self.shift_detach = shift_detach
        self.alpha = nn.Parameter(torch.zeros(len(self.counts), device=device))  # S3Delta initialises alpha at 0
        self.z: Optional[torch.Tensor] = None
        self.shift = 0.0

    def to(self, device: torch.device | str) -> "GateController":
        if self.alpha.device != torch.device(device):
            self.alpha = nn.Parameter(self.alpha.detach().to(device))
        return self

    def probabilities(self) -> torch.Tensor:
        """p (differentiable in alpha) at the current budget and temperature."""
        p, self.shift = keep_probabilities(self.alpha, self.counts, self.budget, self.temperature, self.shift_detach)
        return p

    def draw_noise(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return torch.rand(len(self.counts), generator=generator).to(self.alpha.device)

    def sample(self, noise: Optional[torch.Tensor] = None, detach: bool = False) -> torch.Tensor:
        """Set z for the next forward pass: binary-concrete `sigmoid(logit p + logit u)` with `noise` u, else p."""
        p = self.probabilities()
        if noise is not None:
            u = noise.clamp(EPS, 1 - EPS)
            z = torch.sigmoid(torch.log(p / (1 - p)) + torch.log(u / (1 - u)))
        else:
            z = p
        self.z = z.detach() if detach else z
        return self.z

    def use_probabilities(self) -> None:
        with torch.no_grad():
            self.z = self.probabilities().detach()

    def set_mask(self, keep: list[int] | np.ndarray) -> None:
        mask = torch.zeros(len(self.counts), device=self.alpha.device)
        mask[list(keep)] = 1.0
        self.z = mask

    def expected_parameters(self) -> float:
        with torch.no_grad():
            return float((self.probabilities().double().cpu().numpy() * self.counts).sum())

    def values(self) -> torch.Tensor:
        if self.z is None:
            raise RuntimeError("No gate values: call `sample`, `use_probabilities` or `set_mask` before the forward pass.")
        return self.z


class _Channels:
    """The position index of each channel of one block, kept once per device (no copy per forward pass)."""

    def __init__(self, indices: torch.Tensor) -> None:
        self.first = int(indices[0])
        self._on: dict[torch.device, torch.Tensor] = {indices.device: indices}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on:
            self._on[device] = next(iter(self._on.values())).to(device)
        return self._on[device]

    def gates(self, controller: GateController) -> torch.Tensor:
        values = controller.values()
        return values[self.on(values.device)]


class PositionGate(nn.Module):
    """Stands in the gate slot of a `PrefixKV`: one gate per prefix slot, reported per position (see the module
    docstring), shape `(batch, 1, length)`."""

    per_position = True

    def __init__(self, controller: GateController, channels: _Channels) -> None:
        super().__init__()
        self._gates = lambda: channels.gates(controller)
        self.force: Optional[float] = None
        self.last_value: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self._gates().to(x.dtype)
        return gates.reshape(1, 1, -1).expand(x.shape[0], 1, -1)


class GateHandles:
    """What `install_gates` changed, to undo it."""

    def __init__(self) -> None:
        self.hooks: list[Any] = []
        self.prefixes: list[PrefixKV] = []

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()
        for prefix in self.prefixes:
            prefix.gate = None
            prefix.pending_gate = None
        self.hooks, self.prefixes = [], []


def _scale_channels(controller: GateController, channels: _Channels) -> Callable[..., torch.Tensor]:
    """Forward hook: multiply the last dimension of the output by each channel's position gate."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * channels.gates(controller).to(device=output.device, dtype=output.dtype)

    return hook


def _scale_bias(controller: GateController, index: int) -> Callable[..., torch.Tensor]:
    """Forward hook on an adapter's `up`: its bias counts as its first position's, so it is scaled by that z."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + (controller.values()[index] - 1).to(device=output.device, dtype=output.dtype) * module.bias

    return hook


def _channel_map(superconfig: SuperConfiguration) -> dict[tuple[str, int, str], _Channels]:
    """(block kind, layer, path) -> position index of each channel of that block."""
    owners: dict[tuple[str, int, str], list[int]] = {}
    for i, p in enumerate(superconfig.positions):
        for path in p.paths:
            channels = owners.setdefault((_KIND_OF_MODULE[p.module], p.layer, path), [])
            channels.extend([i] * (p.size - p.start))
    return {key: _Channels(torch.tensor(value, dtype=torch.long)) for key, value in owners.items()}


def install_gates(model: nn.Module, superconfig: SuperConfiguration, controller: GateController) -> GateHandles:
    """Gate every block of `model` (a PEFT model of `superconfig.super_config()`) by its positions' z."""
    spec = superconfig.space.arch
    channel_map = _channel_map(superconfig)
    handles, gated = GateHandles(), set()
    for layer, path, module in located_pet_layers(model, spec):
        for kind in ("lora", "serial", "parallel", "prefix", "bias"):
            for block in module.blocks(kind).values():
                channels = channel_map.get((kind, layer, path))
                width = {"lora": lambda b: b.rank, "prefix": lambda b: b.length, "bias": lambda b: 1}.get(
                    kind, lambda b: b.down.out_features)(block)
                if channels is None or len(channels.on(torch.device("cpu"))) != width:
                    raise RuntimeError(f"The {kind} block at {path} (layer {layer}) is not a block of the super-configuration.")
                if kind == "lora":
                    handles.hooks.append(block.A.register_forward_hook(_scale_channels(controller, channels)))
                elif kind == "bias":  # one position: the whole delta vector scaled by its z
                    handles.hooks.append(block.register_forward_hook(_scale_channels(controller, channels)))
                elif kind == "prefix":
                    if block.gate is not None:
                        raise RuntimeError(f"The prefix at {path} (layer {layer}) already has a gate; S3PET needs an ungated prefix.")
                    block.gate = PositionGate(controller, channels)
                    handles.prefixes.append(block)
                else:
                    handles.hooks.append(block.act.register_forward_hook(_scale_channels(controller, channels)))
                    handles.hooks.append(block.up.register_forward_hook(_scale_bias(controller, channels.first)))
                gated.update(int(i) for i in channels.on(torch.device("cpu")).unique())
    missing = [superconfig.positions[i].name for i in range(len(superconfig)) if i not in gated]
    if missing:
        handles.remove()
        raise RuntimeError(f"No block found in the model for the positions {missing}; is it the super-configuration's model?")
    return handles
