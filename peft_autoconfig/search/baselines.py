"""Named baselines (`baselines: [lora_r8, parallel_adapter, full_finetuning]` in a recipe): the hand-designed
configurations a front must beat, defined once, here, as data.

Each entry is a PEFT config mapping (the `to_dict()` form, `MIXED_PET` unless it names another `peft_type`) plus
`reductions`: size fields given as a reduction factor of the model's hidden size (AdapterHub's convention), resolved
when the model is known. `config: None` is full fine-tuning (no PEFT config; it trains at `learning_rates.full`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class NamedBaseline:
    description: str
    config: Optional[dict[str, Any]]
    reductions: dict[str, int] = field(default_factory=dict)
    """Config field -> reduction factor: the field is set to `hidden_size // factor`."""
    pfeiffer: bool = False
    """Place the serial adapter as AdapterHub's `seq_bn` does (Pfeiffer, on the output LayerNorm) on families that
    have a post-LayerNorm feed-forward block; Houlsby placement elsewhere (pre-LN decoders)."""

    def resolve(self, hidden_size: int, has_post_ln: bool = False) -> Optional[dict[str, Any]]:
        """The PEFT config mapping for a model of `hidden_size` (None for full fine-tuning)."""
        if self.config is None:
            return None
        placement = {"serial_adapter_placement": "pfeiffer"} if self.pfeiffer and has_post_ln else {}
        sizes = {name: max(1, hidden_size // factor) for name, factor in self.reductions.items()}
        return {**self.config, **sizes, **placement}


NAMED_BASELINES: dict[str, NamedBaseline] = {
    "lora_r8": NamedBaseline(
        "LoRA r=8, alpha 8, on the query and value projections (the architecture's default LoRA targets)",
        {"lora_rank": 8, "lora_alpha": 8.0},
    ),
    "serial_adapter": NamedBaseline(
        "serial bottleneck adapter after the FFN, reduction factor 16 (AdapterHub seq_bn)",
        {}, reductions={"serial_adapter_size": 16}, pfeiffer=True,
    ),
    "parallel_adapter": NamedBaseline(
        "parallel adapter beside the FFN, AdapterHub par_bn defaults: reduction factor 2, scaling 4",
        {"parallel_adapter_scaling": 4.0}, reductions={"parallel_adapter_size": 2},
    ),
    "prefix": NamedBaseline("prefix tuning, 10 tokens per layer", {"prefix_length": 10}),
    "unipelt": NamedBaseline(
        "UniPELT with the paper's defaults (gated serial adapter r.f. 16, prefix 10, LoRA r=8 on q,v)",
        {"peft_type": "UNIPELT"}, pfeiffer=True,
    ),
    "full_finetuning": NamedBaseline("full fine-tuning, no PEFT config, at `learning_rates.full`", None),
}
"""Baseline name -> definition (the names a recipe's `baselines:` list may use)."""


@dataclass
class Baselines:
    """The recipe's baselines resolved for one model: name -> PEFT config mapping (`to_dict()` form; None = full)."""

    configs: dict[str, Optional[dict[str, Any]]]
    space: Any

    def analytic_parameters(self, config: Optional[dict[str, Any]]) -> Optional[int]:
        """The parameter count of a baseline, known before training: the analytic PET count of our methods, every
        backbone parameter for full fine-tuning (head excluded, as the runner counts); None (use the runner's count)
        for peft's own methods."""
        if config is None:
            return backbone_parameter_count(self.space.model_config)
        if config.get("peft_type") not in ("MIXED_PET", "UNIPELT"):
            return None
        from ..front import load_point_config
        from ..tuners.plan import count_trainable_parameters

        return count_trainable_parameters(load_point_config(config), self.space.model_config)


def backbone_parameter_count(model_config: Any) -> int:
    """Parameters of the model without a task head, counted on the meta device (no memory, no weights read)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(model_config)
    return sum(parameter.numel() for parameter in model.parameters())


def baseline_configs(specs: list[Any], space: Any, field: str = "baselines") -> Baselines:
    """Build every baseline's PEFT config now (before any training); `RecipeError` naming the bad entry
    (`field[i]`: `baselines` or `algorithm.points_to_evaluate`, which use the same entries)."""
    from ..front import config_to_dict, load_point_config
    from .schema import RecipeError

    configs: dict[str, Optional[dict[str, Any]]] = {}
    for i, spec in enumerate(specs):
        field_name = "preset" if spec.preset is not None else "config"
        post_ln = space.arch.ffn_output_norm is not None
        mapping = NAMED_BASELINES[spec.preset].resolve(space.dims.hidden_size, post_ln) if spec.preset else spec.config
        if mapping is None:
            configs[spec.name] = None
            continue
        try:
            config = load_point_config({"peft_type": "MIXED_PET", "task_type": space.task_type, **mapping})
        except (TypeError, ValueError, KeyError) as error:
            raise RecipeError(f"recipe field `{field}[{i}].{field_name}`: {error}") from None
        configs[spec.name] = config_to_dict(config)
    return Baselines(configs, space)


def encode_config(config: Optional[dict[str, Any]], space: Any) -> dict[str, Any]:
    """A resolved baseline config (`Baselines.configs` value) as a point of `space`; `ValueError` saying why not
    (full fine-tuning, UniPELT, a size or target set the space does not offer)."""
    from ..front import load_point_config

    if config is None or config.get("peft_type") != "MIXED_PET":
        kind = "full fine-tuning" if config is None else config.get("peft_type")
        raise ValueError(f"{kind} is not a point of the search space (a MIXED_PET configuration is)")
    try:
        return space.encode(load_point_config(config))
    except ValueError as error:
        raise ValueError(f"the search space cannot express it: {error}") from None


def encode_points_to_evaluate(specs: list[Any], space: Any) -> list[dict[str, Any]]:
    """The recipe's `algorithm.points_to_evaluate` as points of `space`; `RecipeError` naming the entry that the
    space cannot express."""
    from .schema import RecipeError

    configs = baseline_configs(specs, space, field="algorithm.points_to_evaluate").configs
    points = []
    for i, (name, config) in enumerate(configs.items()):
        try:
            points.append(encode_config(config, space))
        except ValueError as error:
            raise RecipeError(f"recipe field `algorithm.points_to_evaluate[{i}]` ({name!r}): {error}") from None
    return points
