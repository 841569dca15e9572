"""front.json's file names, format version, error type and JSON reader: the leaf every other front module uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
FRONT_FILE = "front.json"
FRONT_DIR = "front"
PLOT_FILE = "pareto.png"
CONFIG_FILE = "adapter_config.json"
MASK_FILE = "weight_masks.safetensors"
"""A front point's unstructured weight masks, copied into its folder; its config names it relative to the folder."""


class FrontError(ValueError):
    """A front.json (or a point's config) that is malformed, of an unsupported version, or names no usable point."""


def read_json(path: str | Path, where: str) -> Any:
    """Parse a JSON file; a syntax error names `where` and the line."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise FrontError(f"{where}: not valid JSON ({error.msg} at line {error.lineno}).") from None
    except UnicodeDecodeError:
        raise FrontError(f"{where}: not a UTF-8 text file.") from None
