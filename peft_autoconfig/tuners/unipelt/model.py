"""`UniPELTModel`: the mixed tuner with gates; adds gate inspection and a conversion to `MixedPetConfig`."""

from __future__ import annotations

from ..mixed.model import MixedPetModel


class UniPELTModel(MixedPetModel):
    """Tuner of gated UniPELT; injection is the mixed tuner's, the gates live inside the blocks."""

    prefix: str = "pet_"
