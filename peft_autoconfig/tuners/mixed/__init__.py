from .config import MixedPetConfig
from .model import MixedPetModel

__all__ = ["MixedPetConfig", "MixedPetModel"]
