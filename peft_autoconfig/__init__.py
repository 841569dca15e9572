"""peft_autoconfig: searched, mixed parameter-efficient fine-tuning configs as ordinary peft methods.

Importing this package registers `MIXED_PET` and `UNIPELT` with peft (each method's package registers itself on
import), so `get_peft_model`, `PeftConfig.from_pretrained` and `PeftModel.from_pretrained` work with our configs.
"""

from .architectures import SUPPORTED_MODEL_TYPES, UnsupportedModelError
from .hub import AutoSearchedConfig
from .tuners import mixed, unipelt
from .tuners.mixed import MixedPetConfig, MixedPetModel
from .tuners.plan import count_trainable_parameters, count_training_parameters
from .tuners.unipelt import UniPELTConfig, UniPELTModel

__version__ = "0.1.0"


def ensure_registered() -> None:
    """Register `MIXED_PET` and `UNIPELT` with peft again if something cleared peft's registry (idempotent)."""
    mixed.register()
    unipelt.register()


__all__ = [
    "AutoSearchedConfig",
    "MixedPetConfig",
    "MixedPetModel",
    "SUPPORTED_MODEL_TYPES",
    "UniPELTConfig",
    "UniPELTModel",
    "UnsupportedModelError",
    "count_trainable_parameters",
    "count_training_parameters",
    "ensure_registered",
]
