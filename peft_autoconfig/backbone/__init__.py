"""Structural pruning of the backbone by two-stage weight-sharing NAS (Klein et al.): see docs/backbone.md."""

from .export import effective_parameters, export_model, exported_parameters, save_exported
from .masking import SuperNetwork
from .space import FAMILIES, GRANULARITIES, BackboneSpace, Dims, SubNetwork, family_for

__all__ = [
    "FAMILIES", "GRANULARITIES", "BackboneSpace", "Dims", "SubNetwork", "SuperNetwork", "effective_parameters",
    "export_model", "exported_parameters", "family_for", "save_exported",
]
