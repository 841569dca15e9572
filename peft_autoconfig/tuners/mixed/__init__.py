"""The mixed composite method (`PeftType.MIXED_PET`); importing this package registers it with peft."""

from ...peft_types import MIXED_PET, register_method
from .config import MixedPetConfig
from .model import MixedPetLayer, MixedPetModel


def register() -> None:
    """Register `MIXED_PET` with peft (idempotent; done on import)."""
    register_method(MIXED_PET, MixedPetConfig, MixedPetModel)


register()

__all__ = ["MixedPetConfig", "MixedPetLayer", "MixedPetModel", "register"]
