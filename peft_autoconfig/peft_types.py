"""Our PEFT type names and the only code that touches peft's method registry.

peft keeps its method names in a closed enum (`peft.utils.peft_types.PeftType`) and refuses to register a method whose
name is not a member, so an outside package has to add its members to the enum first. Each method's package
(`tuners/mixed`, `tuners/unipelt`) calls `register_method` when it is imported, as peft's own methods do.

This module is a leaf: it imports only peft, so every module of peft_autoconfig can import it without an import circle.

A process that has not imported `peft_autoconfig` cannot load our configs: peft raises a `KeyError` for the unknown
`peft_type`. Adding a member and registering are idempotent, so importing twice (or reloading) is harmless.
"""

from __future__ import annotations

from typing import Any

from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType

MIXED_PET = "MIXED_PET"
UNIPELT = "UNIPELT"


def state_dict_prefix(name: str) -> str:
    """The state-dict prefix of method `name` (`MIXED_PET` -> `mixed_pet_`), peft's default `<name>_`."""
    return f"{name.lower()}_"


def add_peft_type(name: str) -> PeftType:
    """Add `name` (upper case) as a member of peft's `PeftType` enum and return the member (existing or new)."""
    if name != name.upper():
        raise ValueError(f"`name` must be upper case, got {name!r}.")
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    if hasattr(member, "_sort_order_"):
        member._sort_order_ = len(PeftType._member_names_)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)  # Python >= 3.12 looks members up as class attributes, not in the map
    return member


def register_method(name: str, config_cls: type, model_cls: Any) -> None:
    """Register a method with peft under `name` (e.g. `MIXED_PET`) with the tuner's own state-dict prefix; idempotent."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = add_peft_type(name)
    if peft_type in PEFT_TYPE_TO_CONFIG_MAPPING:
        return
    register_peft_method(name=name.lower(), config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)
