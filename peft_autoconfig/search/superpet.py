"""The weight-sharing super-PET of a search space: its config, its sandwich training, its folder, its scores.

The super-PET is the space's mixed composite at the largest sizes (every module at its largest option in every
layer; LoRA on the union of the target sets, so every target set is a slice). It is trained once through the runner
with the sandwich rule (`training.sandwich.SandwichTrainer` with `PetSupernet`), saved as a plain peft adapter
folder plus `superpet.json` (what it was trained on and how), and then any point of the space is scored by
inference only on its slice (`tuners.slicing.SuperPet`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..architectures import dims_for
from ..front import config_to_dict
from ..tuners.mixed import MixedPetConfig
from ..tuners.slicing import SuperPet
from .space import SearchSpace

MANIFEST = "superpet.json"
"""Written beside the adapter once training finished: the model signature, the super config, the fingerprint."""


class SuperPetMismatchError(ValueError):
    """A super-PET folder that does not belong to this search (another model, another space or settings)."""


def super_config(space: SearchSpace) -> MixedPetConfig:
    """The config whose slices are all the points of `space` (see the module docstring)."""
    config = space.decode(space.largest_point())
    if space.target_options and _positive(config.lora_rank):
        union = sorted({name for option in space.target_options for name in option.split(",")})
        config = dataclasses.replace(config, target_modules=union)
    return config


@dataclass(frozen=True)
class PetSupernet:
    """`SandwichTrainer(supernet=PetSupernet(space))`: the super-PET's switch (`SuperPet`) and its students, points
    of `space` (`SearchSpace.smallest`/`sample`)."""

    space: SearchSpace

    def __call__(self, model: torch.nn.Module) -> tuple[SuperPet, SearchSpace]:
        return SuperPet(model, self.space), self.space


def model_signature(model_config: Any) -> dict[str, Any]:
    """What makes a super-PET's weights fit a model: its family and sizes."""
    dims = dims_for(model_config)
    return {"model_type": model_config.model_type, **dataclasses.asdict(dims)}


def fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(directory: Path) -> Optional[dict[str, Any]]:
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def check_manifest(manifest: dict[str, Any], directory: Path, model_config: Any, config: MixedPetConfig,
                   training: Optional[dict[str, Any]] = None) -> None:
    """Refuse a super-PET folder of another model (`model`), another space (`space`) or, when `training` is given,
    other training settings; the error names the field and both values."""
    signature = model_signature(model_config)
    if manifest.get("model_signature") != signature:
        raise SuperPetMismatchError(
            f"`model`: the super-PET in {str(directory)!r} was trained on {manifest.get('model')!r} "
            f"({manifest.get('model_signature')}); this search's model is {signature}. Use a super-PET of this model "
            "or another output folder.")
    expected = config_to_dict(config)
    if manifest.get("config") != expected:
        raise SuperPetMismatchError(
            f"`space`: the super-PET in {str(directory)!r} holds {manifest.get('config')}, but this search's space "
            f"needs {expected}; use another output folder.")
    if training is not None and manifest.get("training") != training:
        raise SuperPetMismatchError(
            f"`algorithm.settings`/`fidelity`: the super-PET in {str(directory)!r} was trained with "
            f"{manifest.get('training')}, this search asks for {training}; use another output folder.")


def _positive(value: Any) -> bool:
    return value > 0 if isinstance(value, int) else any(v > 0 for v in value.values())
