"""Loading and describing the PEFT config of a front point: one loader for a dict, a folder, a file or a point.

The config class comes from peft's own registry (`PEFT_TYPE_TO_CONFIG_MAPPING`), never from anything in the file,
so loading a config cannot run remote code. Every error names where the config came from and the field.

A config read from a folder (or its adapter_config.json) may name its `weight_masks` file relative to that folder (a
front point carries `weight_masks.safetensors`, so the folder can be moved or pushed); it is resolved against the
folder when the file is there. Otherwise the value is kept as written, and `get_peft_model` warns that the masks are
expected from a saved adapter (`tuners/weight_masks.install_from_config`).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from pathlib import Path
from typing import Any

from .files import CONFIG_FILE, FrontError, read_json


def known_peft_types() -> dict[str, type]:
    """PEFT type name -> config class, as registered with peft right now (ours after `import peft_autoconfig`)."""
    import peft_autoconfig  # noqa: F401  (registers MIXED_PET/UNIPELT in this process, e.g. a Dask worker)
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(key, "value", key)): cls for key, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A PEFT config as the JSON-ready dict that `save_pretrained` writes (sets become sorted lists)."""
    data = json.loads(json.dumps(config.to_dict(), default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    data.pop("runtime_config", None)
    return data


VOLATILE_FIELDS = ("peft_version", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping")
"""Fields that say where or with what a config was written, not what it trains."""


def config_identity(config: dict[str, Any] | None) -> str:
    """A config mapping as the canonical JSON that keys trials in a journal: the fields that differ from the config
    class's defaults, without `VOLATILE_FIELDS`. A field added to a config class in a later version (with a default that
    keeps the old behaviour) therefore leaves the identity of every earlier config unchanged, so a journal still
    answers for it. None (full fine-tuning) is "null"; a mapping that no longer parses keys as written."""
    if config is None:
        return "null"
    try:
        parsed = load_point_config(config)
    except (TypeError, ValueError, KeyError):
        return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return _identity(parsed, config_to_dict(parsed))


def _identity(parsed: Any, full: dict[str, Any]) -> str:
    """`full` (a mapping of the config class of `parsed`) without volatile fields and fields at their defaults."""
    defaults = {}
    for spec in dataclasses.fields(parsed):
        if spec.default is not dataclasses.MISSING:
            defaults[spec.name] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            defaults[spec.name] = spec.default_factory()
    defaults = json.loads(json.dumps(defaults, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    kept = {k: v for k, v in full.items()
            if k not in VOLATILE_FIELDS and (k in ("peft_type", "task_type") or k not in defaults or defaults[k] != v)}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)


FIELDS_OF_BLOCK: dict[str, tuple[str, ...]] = {
    "serial_adapter_size": ("serial_adapter_placement",),
    "parallel_adapter_size": ("parallel_adapter_scaling",),
    "lora_rank": ("lora_alpha", "use_rslora", "lora_dropout", "target_modules"),
    "prefix_length": ("prefix_projection_size", "prefix_init_std"),
    "bias_tuning": ("bias_targets",),
}
"""A composite block's size field -> the fields that only matter where that block is present."""


def functional_identity(config: dict[str, Any] | None, default_lora_targets: list[str] | None = None,
                        num_layers: int | None = None) -> str:
    """`config_identity` of what a composite (`MIXED_PET`) config trains, so two configs that build the same model
    the same way get one identity: fields of absent blocks dropped (the placement of a serial adapter of size 0),
    `lora_alpha` equal to every rank written as None (both scale by 1), `target_modules` None written as the
    architecture's `default_lora_targets` (sorted), and with `num_layers` every block's sizes as the layers get them
    (`_sizes_per_layer`: a size only in unselected layers is absent, `layers_to_transform` folded into the sizes).
    Other configs keep their `config_identity`. Used to train such twins once (the search's final stage)."""
    if config is None:
        return "null"
    try:
        parsed = load_point_config(config)
    except (TypeError, ValueError, KeyError):
        return config_identity(config)
    if str(getattr(parsed.peft_type, "value", parsed.peft_type)) != "MIXED_PET":
        return config_identity(config)
    full = config_to_dict(parsed)
    if num_layers is not None:
        _sizes_per_layer(full, parsed, num_layers)
    sizes = {field: _sizes(full.get(field)) for field in FIELDS_OF_BLOCK}
    for field, dependent in FIELDS_OF_BLOCK.items():
        if not any(sizes[field]):
            for name in dependent:
                full.pop(name, None)
    if not any(sizes["serial_adapter_size"]) and not any(sizes["parallel_adapter_size"]):
        full.pop("adapter_non_linearity", None)
    ranks = [r for r in sizes["lora_rank"] if r]
    if ranks and not full.get("use_rslora") and full.get("lora_alpha") is not None and all(
            float(full["lora_alpha"]) == float(r) for r in ranks):
        full["lora_alpha"] = None
    if ranks:
        targets = full.get("target_modules") or default_lora_targets
        full["target_modules"] = sorted(targets) if targets else None
    return _identity(parsed, full)


def _sizes_per_layer(full: dict[str, Any], parsed: Any, num_layers: int) -> None:
    """Write every block's sizes in `full` as the layers of `parsed` (a `MixedPetConfig`) get them
    (`MixedPetConfig.size`: 0 where absent or not selected): one int when all `num_layers` layers get the same size,
    else `{layer: size}` of the layers that get one; `layers_to_transform` then says nothing more and is dropped.
    So a size given only for unselected layers reads as absent, and `{0: 8}` equals 8 in `layers_to_transform: [0]`."""
    for field in FIELDS_OF_BLOCK:
        present = {layer: parsed.size(field, layer) for layer in range(num_layers)}
        present = {layer: size for layer, size in present.items() if size > 0}
        if len(present) == num_layers and len(set(present.values())) == 1:
            full[field] = next(iter(present.values()))
        else:
            full[field] = {str(layer): size for layer, size in present.items()} or 0
    full["layers_to_transform"] = None


def _sizes(value: Any) -> list[int]:
    """A size field (an int or {layer: size}) as its list of sizes."""
    if isinstance(value, dict):
        return [int(v) for v in value.values()]
    return [int(value or 0)]


def relative_weight_masks(data: Any) -> str | None:
    """The `weight_masks` of a parsed config when it is a plain relative path inside the config's folder (no `..`,
    no drive, no backslash), else None: what a front point folder (or a pushed repo) may carry next to the config."""
    value = data.get("weight_masks") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value or value.startswith(("/", "~", "\\")) or "\\" in value or ":" in value:
        return None
    normalised = posixpath.normpath(value)
    return None if normalised.startswith("..") or normalised == "." else normalised


def resolve_weight_masks(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`data` with a relative `weight_masks` made absolute against `folder` when that file exists (else unchanged)."""
    name = relative_weight_masks(data)
    if name is not None and (folder / name).is_file():
        return {**data, "weight_masks": str((folder / name).absolute())}
    return data


def _from_dict(data: Any, where: str) -> Any:
    from peft import PeftConfig

    if not isinstance(data, dict):
        raise FrontError(f"{where}: expected a JSON object, got {type(data).__name__}.")
    data = dict(data)
    data.pop("runtime_config", None)  # runtime-only, as in peft's `PeftConfig.from_json_file`
    peft_type = data.get("peft_type")
    if peft_type is None:
        raise FrontError(f"{where}: field `peft_type` is missing; a PEFT config must name its method.")
    known = known_peft_types()
    if not isinstance(peft_type, str) or peft_type not in known:
        raise FrontError(
            f"{where} field `peft_type` = {peft_type!r} is not a known PEFT type; known: {sorted(known)}; "
            "did you `import peft_autoconfig`?"
        )
    try:
        return PeftConfig.from_peft_type(**data)
    except (TypeError, ValueError, KeyError) as error:
        raise FrontError(f"{where}: invalid {known[peft_type].__name__}: {error}") from None


def load_point_config(source: Any, *, root: str | Path | None = None, where: str | None = None) -> Any:
    """The `PeftConfig` of `source`, which is one of:

    - a dict (a config's `to_dict()` form or a parsed adapter_config.json);
    - a folder holding adapter_config.json, or that file itself (a relative `weight_masks` is resolved against the
      folder, see the module docstring);
    - a `FrontPoint`: its folder under `root` (the search output) when given and present, else its inline config.

    Raises `FrontError` (a `ValueError`) naming `where` and the field, or `FileNotFoundError` for a missing folder.
    """
    if hasattr(source, "config_path") and hasattr(source, "config"):  # a FrontPoint (imported by document.py)
        where = where or f"point {source.name!r}"
        if root is not None and source.config_path is not None and (Path(root) / source.config_path).is_dir():
            return load_point_config(Path(root) / source.config_path, where=f"{where}/{CONFIG_FILE}")
        if source.config is None:
            raise FrontError(f"{where}: field `config` is null (a baseline without a PEFT config, e.g. full fine-tuning).")
        return _from_dict(source.config, where)
    if isinstance(source, dict):
        return _from_dict(source, where or "config")
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{where or source}: folder has no {CONFIG_FILE}.")
    elif not path.is_file():
        raise FileNotFoundError(f"{where or source}: not a PEFT config folder (expected {CONFIG_FILE} inside).")
    where = where or str(path)
    data = read_json(path, where)
    if isinstance(data, dict):
        data = resolve_weight_masks(data, path.parent)
    return _from_dict(data, where)


def _peft_type(config: Any) -> str:
    return str(getattr(config.peft_type, "value", config.peft_type))


def describe_config(config: Any) -> str:
    """One line saying what a config adds, exact enough to rebuild it by hand.

    e.g. 'serial {0: 8, 3: 16} · LoRA r4 (query, value) · layers 0, 3', 'UNIPELT: serial hidden/16 · ... · gated',
    'LORA r8 (query, value)'.
    """
    from ..tuners.mixed.config import MixedPetConfig

    if not isinstance(config, MixedPetConfig):
        bits = [_peft_type(config)]
        if getattr(config, "r", None):
            bits.append(f"r{config.r}")
        if getattr(config, "target_modules", None):
            targets = config.target_modules
            bits.append("(" + (targets if isinstance(targets, str) else ", ".join(sorted(targets))) + ")")
        return " ".join(bits)

    def size(value: Any) -> str:
        if isinstance(value, int):
            return str(value)
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted((int(k), v) for k, v in value.items() if v)) + "}"

    def present(value: Any) -> bool:
        return value > 0 if isinstance(value, int) else any(v > 0 for v in value.values())

    parts = []
    factor = getattr(config, "adapter_reduction_factor", None)
    if factor:
        parts.append(f"serial hidden/{factor}")
    elif present(config.serial_adapter_size):
        parts.append(f"serial {size(config.serial_adapter_size)}")
    if present(config.parallel_adapter_size):
        parts.append(f"parallel {size(config.parallel_adapter_size)} (x{config.parallel_adapter_scaling:g})")
    if present(config.lora_rank):
        targets = ", ".join(config.target_modules) if config.target_modules else "q, v"
        parts.append(f"LoRA r{size(config.lora_rank)} ({targets})")
    if present(config.prefix_length):
        parts.append(f"prefix {size(config.prefix_length)}")
    if present(getattr(config, "bias_tuning", 0)):
        targets = ", ".join(config.bias_targets) if getattr(config, "bias_targets", None) else "all"
        parts.append(f"BitFit {size(config.bias_tuning)} ({targets})")
    if getattr(config, "weight_masks", None):
        parts.append("weight masks")
    parts.append("layers all" if config.layers_to_transform is None
                 else "layers " + ", ".join(map(str, config.layers_to_transform)))
    if _peft_type(config) == "UNIPELT":
        parts.append("gated")
    return " · ".join(parts)
