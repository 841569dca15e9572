"""peft_autoconfig: searched, mixed parameter-efficient fine-tuning configs as ordinary peft methods.

Importing this package registers `MIXED_PET` and `UNIPELT` with peft, so `get_peft_model`,
`PeftConfig.from_pretrained` and `PeftModel.from_pretrained` work with our configs.
"""

from .architectures import SUPPORTED_MODEL_TYPES, UnsupportedModelError
from .cost import count_trainable_parameters, count_training_parameters
from .hub import AutoSearchedConfig
from .registry import ensure_registered
from .tuners.mixed import MixedPetConfig, MixedPetModel
from .tuners.unipelt import UniPELTConfig, UniPELTModel

ensure_registered()

__version__ = "0.1.0"

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
]
