"""What a push uploads, read and checked from a local folder before any network call.

A folder is either a search output (front.json + front/<name>/ per point + pareto.png + journal) or a single PEFT
config folder (adapter_config.json, optionally adapter_model.safetensors). A single config folder that sits inside
a search output (`<out>/front/p00`) keeps its point's measured results for the model card.

Only JSON configs, safetensors weights, the Pareto plot and front.json travel; pickled weights (*.bin, *.pt) and
the journal stay local (the journal is an internal, resumable log with local paths).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from peft import PeftConfig

from ..front import CONFIG_FILE, FRONT_FILE, PLOT_FILE, Front, FrontPoint
from .errors import HubConfigError
from .validation import read_config, read_front

WEIGHT_SUFFIX = ".safetensors"
PRUNE_KIND = "prune-model"
"""`kind` of a `prune-model` front.json: a front of pruned models, pushed by `hub.pruned`, not of PEFT configs."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class PushSource:
    """A checked folder: the files to upload (path in repo -> local path) and what the card needs."""

    root: Path
    kind: str  # "front" or "config"
    files: dict[str, Path] = field(default_factory=dict)
    front: Front | None = None
    configs: dict[str, PeftConfig] = field(default_factory=dict)  # point name (or "config") -> config
    point: FrontPoint | None = None  # the front point of a single config folder, when known


def _config_folder_files(folder: Path, prefix: str, where: str) -> tuple[dict[str, Path], PeftConfig]:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise HubConfigError(f"{where}: no {CONFIG_FILE} in {folder}.")
    config = read_config(config_path, f"{where}/{CONFIG_FILE}")
    files = {f"{prefix}{CONFIG_FILE}": config_path}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix == WEIGHT_SUFFIX:
            files[f"{prefix}{path.name}"] = path
        elif path.is_file() and path.suffix in PICKLE_SUFFIXES:
            warnings.warn(f"{path}: pickled weights are not uploaded (only safetensors); save with safetensors.")
    return files, config


def _enclosing_point(folder: Path) -> tuple[Front, FrontPoint] | None:
    """(front, point) when `folder` is `<out>/<config_path>` of a valid front.json in an ancestor, else None."""
    resolved = folder.resolve()
    for ancestor in list(resolved.parents)[:3]:
        front_path = ancestor / FRONT_FILE
        if not front_path.is_file():
            continue
        try:
            front = read_front(front_path, str(front_path))
        except HubConfigError:
            return None
        for point in front.points:
            if (ancestor / point.config_path).resolve() == resolved:
                return front, point
    return None


def _kind(path: Path) -> object:
    """The `kind` field of a JSON file (None when unreadable: `read_front` reports that)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def read_source(directory: str | Path) -> PushSource:
    """Check `directory` and list what a push would upload; raise before anything leaves the machine."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"`dir` must be a search output folder or a PEFT config folder; {root} is not a folder.")
    if (root / FRONT_FILE).is_file():
        if _kind(root / FRONT_FILE) == PRUNE_KIND:
            raise HubConfigError(f"{root} is a prune-model output (pruned models, not PEFT configs): push it with "
                                 "`peft-autoconfig push` or `peft_autoconfig.hub.pruned.push_pruned_model`.")
        front = read_front(root / FRONT_FILE, str(root / FRONT_FILE))
        source = PushSource(root=root, kind="front", front=front, files={FRONT_FILE: root / FRONT_FILE})
        for point in front.points:
            files, config = _config_folder_files(
                root / point.config_path, point.config_path + "/", f"{root} point {point.name!r}"
            )
            source.files.update(files)
            source.configs[point.name] = config
        if (root / PLOT_FILE).is_file():
            source.files[PLOT_FILE] = root / PLOT_FILE
        else:
            warnings.warn(f"{root}: no {PLOT_FILE}; the model card will have no Pareto plot.")
        return source
    if (root / CONFIG_FILE).is_file():
        files, config = _config_folder_files(root, "", str(root))
        enclosing = _enclosing_point(root)
        front, point = enclosing if enclosing else (None, None)
        return PushSource(root=root, kind="config", files=files, front=front, point=point,
                          configs={point.name if point else "config": config})
    raise HubConfigError(
        f"{root}: neither {FRONT_FILE} (a search output) nor {CONFIG_FILE} (a PEFT config folder) found."
    )
