"""Pinned UniPELT gates (`set_gate`) and their saved form, `UniPELTConfig.gate_pins`.

A pin is stored in the adapter's config under the key `"<layer>.<block>"` (`"1.serial"`,
`"0.lora/attention.self.value"`), so `save_pretrained` writes it to `adapter_config.json` and loading the adapter
pins the same gates again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from torch import nn

from .gates import BLOCK_KINDS, GateSite, find_gates

PIN_BLOCKS: tuple[str, ...] = ("lora/<path>", *BLOCK_KINDS[1:])
"""Allowed `<block>` parts of a `gate_pins` key."""


def pin_key(site: GateSite) -> str:
    return f"{site.layer}.{site.block}"


def validate_gate_pins(pins: Any) -> dict[str, float]:
    """Check `gate_pins` (key `"<layer>.<block>"`, value in [0, 1]) and return it with float values."""
    if not isinstance(pins, dict):
        raise TypeError(f"`gate_pins` must be a dict mapping '<layer>.<block>' to a value in [0, 1], got {pins!r}.")
    checked: dict[str, float] = {}
    for key, value in pins.items():
        layer, _, block = str(key).partition(".")
        if not isinstance(key, str) or not layer.isdigit() or not block:
            raise ValueError(
                f"`gate_pins` key {key!r} must be '<layer>.<block>', e.g. '0.serial' or '2.lora/attention.self.value'."
            )
        kind, _, path = block.partition("/")
        if not (kind in BLOCK_KINDS[1:] and not path) and not (kind == "lora" and path):
            raise ValueError(f"`gate_pins` key {key!r}: the block must be one of {list(PIN_BLOCKS)}, got {block!r}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"`gate_pins[{key!r}]` must be a number in [0, 1], got {value!r}.")
        checked[key] = float(value)
    return checked


def apply_gate_pins(tuner: nn.Module, adapter_name: str) -> None:
    """Pin the gates of `adapter_name` listed in its config's `gate_pins` (after injection or loading)."""
    pins = tuner.peft_config[adapter_name].gate_pins
    if not pins:
        return
    sites = {pin_key(site): site for site in find_gates(tuner, adapter_name)}
    for key, value in pins.items():
        if key not in sites:
            raise ValueError(
                f"`gate_pins` key {key!r} has no gate in this model (adapter {adapter_name!r}); "
                f"keys with a gate: {sorted(sites)}."
            )
        sites[key].gate.force = value


def set_gates(
    tuner: nn.Module,
    block: str,
    value: Optional[float],
    layers: Optional[Iterable[int]] = None,
    adapter_name: Optional[str] = None,
) -> int:
    """Pin gates to `value` (None: learned again) and record it in `gate_pins`; returns how many gates changed.

    See `UniPELTModel.set_gate`.
    """
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"`value` must be a number in [0, 1] or None (learned), got {value!r}.")
        value = float(value)
    sites = find_gates(tuner, adapter_name)
    available = sorted({s.block for s in sites} | {s.block.split("/", 1)[0] for s in sites})
    if block == "all":
        chosen = sites
    else:
        chosen = [s for s in sites if s.block == block or s.block.split("/", 1)[0] == block]
    if not chosen:
        where = "" if adapter_name is None else f" (adapter {adapter_name!r})"
        raise ValueError(
            f"`block` {block!r} has no gate in this model{where}. "
            f"Allowed values: {['all'] + available}."
        )
    if layers is not None:
        wanted = set(int(i) for i in layers)
        present = {s.layer for s in chosen}
        missing = sorted(wanted - present)
        if missing:
            raise ValueError(f"`layers` {missing} have no {block!r} gate; layers with one: {sorted(present)}.")
        chosen = [s for s in chosen if s.layer in wanted]
    for site in chosen:
        site.gate.force = value
        pins = tuner.peft_config[site.adapter].gate_pins
        if value is None:
            pins.pop(pin_key(site), None)
        else:
            pins[pin_key(site)] = value
    return len(chosen)
