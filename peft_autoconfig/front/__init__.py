"""The one owner of a search's result: front.json's dataclasses, reader and writer, its file names and format
version, loading a point's PEFT config and describing it. Search export, `show`, `train` and the Hub code all
go through here (see docs/search.md for the format)."""

from .configs import (
    config_identity,
    functional_identity,
    config_to_dict,
    describe_config,
    known_peft_types,
    load_point_config,
    relative_weight_masks,
    resolve_weight_masks,
)
from .document import Front, FrontPoint, Objective, Report, Selection, check_relative_path
from .files import (
    CONFIG_FILE,
    FORMAT_VERSION,
    FRONT_DIR,
    FRONT_FILE,
    MASK_FILE,
    PLOT_FILE,
    SUPPORTED_VERSIONS,
    FrontError,
    read_json,
)
from .stats import binomial_standard_error, mean_and_sd, metric_standard_error

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "FRONT_DIR",
    "FRONT_FILE",
    "MASK_FILE",
    "PLOT_FILE",
    "SUPPORTED_VERSIONS",
    "Front",
    "FrontError",
    "FrontPoint",
    "Objective",
    "Report",
    "Selection",
    "config_identity",
    "functional_identity",
    "binomial_standard_error",
    "check_relative_path",
    "config_to_dict",
    "describe_config",
    "known_peft_types",
    "load_point_config",
    "mean_and_sd",
    "metric_standard_error",
    "read_json",
    "relative_weight_masks",
    "resolve_weight_masks",
]
