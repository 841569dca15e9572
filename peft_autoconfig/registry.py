"""The only module that touches peft's registries.

peft keeps its method names in a closed enum (`peft.utils.peft_types.PeftType`) and refuses to register a method
whose name is not a member. An outside package therefore has to add its members to the enum before calling
`peft.utils.register_peft_method`. This is done once, here, on `import peft_autoconfig`.

A process that has not imported `peft_autoconfig` cannot load our configs: peft raises a `KeyError` for the
unknown `peft_type`. `ensure_registered` is idempotent, so importing twice (or reloading) is harmless.
"""

from __future__ import annotations

import enum

from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType

MIXED_PET = "MIXED_PET"
UNIPELT = "UNIPELT"


def add_peft_type(name: str) -> PeftType:
    """Add `name` (upper case) as a member of peft's `PeftType` enum and return the member.

    Returns the existing member if it is already there.
    """
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
    # enum.Enum caches dir()/iteration through _member_names_; nothing else to update on Python >= 3.11.
    assert isinstance(member, enum.Enum)
    return member


def ensure_registered() -> None:
    """Register `MIXED_PET` and `UNIPELT` with peft (config class, tuner class, state-dict prefix)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    from .tuners.mixed import MixedPetConfig, MixedPetModel
    from .tuners.unipelt import UniPELTConfig, UniPELTModel

    for name, config_cls, model_cls in (
        (MIXED_PET, MixedPetConfig, MixedPetModel),
        (UNIPELT, UniPELTConfig, UniPELTModel),
    ):
        peft_type = add_peft_type(name)
        if peft_type in PEFT_TYPE_TO_CONFIG_MAPPING:
            continue
        register_peft_method(name=name.lower(), config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)


def is_registered(name: str) -> bool:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return name in PeftType.__members__ and PeftType[name] in PEFT_TYPE_TO_CONFIG_MAPPING
