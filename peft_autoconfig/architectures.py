"""Supported model families, described as data.

Every PET block is attached to a *leaf* module of a transformer layer (a `Linear` or GPT-2's `Conv1D`), never to a
container, so that peft's injection (which resolves module paths one by one) never meets a wrapped parent:

- LoRA wraps the chosen projections (`target_modules`).
- The parallel adapter lives on the feed-forward *output* projection (`ffn_output`): it reads the feed-forward
  *input*, which the projection's parent module receives as positional argument `ffn_input_arg` (BERT's
  `BertOutput(hidden, input_tensor)`: 1; an `mlp(x)`: 0), and adds its output to the projection's output.
- The serial adapter has two placements. "houlsby": on `ffn_output`, transforming that projection's output (before
  the residual sum and, in post-LN encoders, the LayerNorm). "pfeiffer" (post-LN encoders only): on the LayerNorm
  that closes the feed-forward block (`ffn_output_norm`, which receives `h + x`): the adapter reads `LN(h + x)` and
  the block returns `LN(h + x + adapter(LN(h + x)))`, AdapterHub's `SeqBnConfig`. Pre-LN decoders have no such
  LayerNorm (`ffn_output_norm` is None) and only take "houlsby".
- Prefix key/values live on a projection inside the attention module (`prefix_holder`); an attention-interface
  wrapper (`tuners/attention.py`) prepends them to the keys and values the model's own attention receives.
- Bias tuning (BitFit) adds a trainable bias delta to the output of any projection and of the LayerNorms listed in
  `bias_norms` (LayerNorms with a bias; Llama's RMSNorm has none, so that family lists none).

A model whose `config.model_type` is not listed gets `UnsupportedModelError` listing the supported types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from peft.utils.error import PeftError


class UnsupportedModelError(PeftError, ValueError):
    """The base model's architecture has no `ArchitectureSpec`."""


@dataclass(frozen=True)
class ModelDims:
    """The dimensions the parameter count needs, read from a transformers config."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the PET blocks go in one model family. Paths are relative to one transformer layer."""

    family: str
    model_types: tuple[str, ...]
    layers_attr: str
    attention: str
    prefix_holder: str
    ffn_output: str
    ffn_input_arg: int
    default_lora_targets: tuple[str, ...]
    linear_shapes: tuple[tuple[str, str, str], ...]
    """(relative path, in_features expression, out_features expression) of every adaptable projection."""
    ffn_output_norm: str | None = None
    """The post-LN LayerNorm closing the feed-forward block (Pfeiffer serial adapter); None in pre-LN families."""
    bias_norms: tuple[str, ...] = ()
    """LayerNorms inside a layer whose bias BitFit may tune (relative paths); empty where the norms have no bias."""

    @property
    def prefix_holder_path(self) -> str:
        return f"{self.attention}.{self.prefix_holder}"

    def layer_regex(self) -> re.Pattern[str]:
        return re.compile(rf"^(?:.*\.)?{re.escape(self.layers_attr)}\.(\d+)\.(.+)$")

    def split_key(self, key: str) -> tuple[int, str] | None:
        """Split a module key into (layer index, path inside the layer), or None outside the layers."""
        match = self.layer_regex().match(key)
        if match is None:
            return None
        return int(match.group(1)), match.group(2)

    def shapes(self, dims: ModelDims) -> dict[str, tuple[int, int]]:
        env = {
            "h": dims.hidden_size,
            "q": dims.num_heads * dims.head_dim,
            "kv": dims.kv_dim,
            "i": dims.intermediate_size,
        }
        return {path: (eval_dim(fan_in, env), eval_dim(fan_out, env)) for path, fan_in, fan_out in self.linear_shapes}

    def block_sites(self, dims: ModelDims) -> dict[str, tuple[int, int]]:
        """Every leaf inside a layer that may receive blocks, with (in, out) features: the projections and, where
        the family has one, the feed-forward output LayerNorm."""
        sites = self.shapes(dims)
        for norm in (self.ffn_output_norm, *self.bias_norms):
            if norm is not None:
                sites[norm] = (dims.hidden_size, dims.hidden_size)
        return sites

    def bias_sites(self) -> list[str]:
        """Every leaf inside a layer whose output BitFit may shift: the projections, then `bias_norms`."""
        return [path for path, _, _ in self.linear_shapes] + list(self.bias_norms)

    def serial_adapter_site(self, placement: str) -> str:
        """The leaf that holds the serial adapter in `placement` ("houlsby" or "pfeiffer")."""
        if placement == "houlsby":
            return self.ffn_output
        if self.ffn_output_norm is None:
            raise ValueError(
                f"`serial_adapter_placement`='pfeiffer' reads the LayerNorm after the feed-forward residual sum, which a "
                f"{self.family} (pre-LN) does not have. Allowed values for this family: ['houlsby'] (after the "
                f"feed-forward output projection `{self.ffn_output}`)."
            )
        return self.ffn_output_norm

    def resolve_lora_targets(self, target_modules: list[str] | set[str] | tuple[str, ...] | None) -> list[str]:
        """Map user target names ("value", "q_proj", "mlp.c_proj") to paths inside a layer.

        A name matches a path equal to it or ending in `.name`. A name that matches nothing is an error listing the
        allowed names, so that a typo never silently adapts nothing.
        """
        targets = list(self.default_lora_targets if not target_modules else target_modules)
        return _resolve_names(targets, [path for path, _, _ in self.linear_shapes], "target_modules",
                              f"a projection of a {self.family} layer")

    def resolve_bias_targets(self, bias_targets: list[str] | set[str] | tuple[str, ...] | None) -> list[str]:
        """Map BitFit target names ("query", "attention.output.dense", "LayerNorm") to paths inside a layer, like
        `resolve_lora_targets`; None or empty = every bias site (`bias_sites`, BitFit proper)."""
        sites = self.bias_sites()
        if not bias_targets:
            return sorted(sites)
        return _resolve_names(list(bias_targets), sites, "bias_targets",
                              f"a projection or bias-carrying LayerNorm of a {self.family} layer")


def _resolve_names(names: list[str], paths: list[str], field: str, what: str) -> list[str]:
    """Paths equal to or ending in `.name` for each name; a name matching nothing raises, listing the allowed names."""
    resolved: list[str] = []
    for name in sorted(set(names)):
        hits = [p for p in paths if p == name or p.endswith("." + name)]
        if not hits:
            allowed = sorted({p.rsplit(".", 1)[-1] for p in paths} | set(paths))
            raise ValueError(f"`{field}` entry {name!r} is not {what}. Allowed values: {allowed}.")
        resolved.extend(h for h in hits if h not in resolved)
    return sorted(resolved)


def eval_dim(expr: str, env: dict[str, int]) -> int:
    """Evaluate a tiny dimension expression such as "h", "3*h" or "kv"."""
    total = 1
    for factor in expr.split("*"):
        factor = factor.strip()
        total *= int(factor) if factor.isdigit() else env[factor]
    return total


_BERT_SHAPES = (
    ("attention.self.query", "h", "h"),
    ("attention.self.key", "h", "h"),
    ("attention.self.value", "h", "h"),
    ("attention.output.dense", "h", "h"),
    ("intermediate.dense", "h", "i"),
    ("output.dense", "i", "h"),
)

ARCHITECTURES: tuple[ArchitectureSpec, ...] = (
    ArchitectureSpec(
        family="BERT-style encoder",
        model_types=("bert", "roberta", "xlm-roberta", "camembert"),
        layers_attr="layer",
        attention="attention.self",
        prefix_holder="key",
        ffn_output="output.dense",
        ffn_input_arg=1,
        default_lora_targets=("query", "value"),
        linear_shapes=_BERT_SHAPES,
        ffn_output_norm="output.LayerNorm",
        bias_norms=("attention.output.LayerNorm", "output.LayerNorm"),
    ),
    ArchitectureSpec(
        family="Llama-style decoder",
        model_types=("llama", "mistral", "qwen2", "qwen3"),
        layers_attr="layers",
        attention="self_attn",
        prefix_holder="k_proj",
        ffn_output="mlp.down_proj",
        ffn_input_arg=0,
        default_lora_targets=("q_proj", "v_proj"),
        linear_shapes=(
            ("self_attn.q_proj", "h", "q"),
            ("self_attn.k_proj", "h", "kv"),
            ("self_attn.v_proj", "h", "kv"),
            ("self_attn.o_proj", "q", "h"),
            ("mlp.gate_proj", "h", "i"),
            ("mlp.up_proj", "h", "i"),
            ("mlp.down_proj", "i", "h"),
        ),
    ),
    ArchitectureSpec(
        family="GPT-2-style decoder",
        model_types=("gpt2",),
        layers_attr="h",
        attention="attn",
        prefix_holder="c_attn",
        ffn_output="mlp.c_proj",
        ffn_input_arg=0,
        default_lora_targets=("c_attn",),
        linear_shapes=(
            ("attn.c_attn", "h", "3*h"),
            ("attn.c_proj", "h", "h"),
            ("mlp.c_fc", "h", "i"),
            ("mlp.c_proj", "i", "h"),
        ),
        bias_norms=("ln_1", "ln_2"),
    ),
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for spec in ARCHITECTURES for t in spec.model_types)


def _get(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def spec_for(model_config: Any) -> ArchitectureSpec:
    """The `ArchitectureSpec` of a transformers config (object or dict); raises `UnsupportedModelError`."""
    model_type = _get(model_config, "model_type")
    for spec in ARCHITECTURES:
        if model_type in spec.model_types:
            return spec
    raise UnsupportedModelError(
        f"peft_autoconfig does not support model_type {model_type!r}. Supported model types: "
        f"{list(SUPPORTED_MODEL_TYPES)} (BERT/RoBERTa-style encoders, Llama- and GPT-2-style decoders)."
    )


def dims_for(model_config: Any) -> ModelDims:
    """Read the dimensions of a transformers config (object or dict) without building the model."""
    spec_for(model_config)
    hidden = _get(model_config, "hidden_size") or _get(model_config, "n_embd")
    layers = _get(model_config, "num_hidden_layers") or _get(model_config, "n_layer")
    heads = _get(model_config, "num_attention_heads") or _get(model_config, "n_head")
    kv_heads = _get(model_config, "num_key_value_heads") or heads
    head_dim = _get(model_config, "head_dim") or hidden // heads
    intermediate = _get(model_config, "intermediate_size") or _get(model_config, "n_inner") or 4 * hidden
    return ModelDims(
        hidden_size=int(hidden),
        num_layers=int(layers),
        num_heads=int(heads),
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        intermediate_size=int(intermediate),
    )
