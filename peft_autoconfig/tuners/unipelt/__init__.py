from .config import UniPELTConfig
from .model import UniPELTModel

__all__ = ["UniPELTConfig", "UniPELTModel"]
