"""`algorithm.settings` of `algorithm.name: s3pet`, with the reference implementation's defaults (thunlp/S3Delta)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..schema import RecipeModel

Module = Literal["serial_adapter", "parallel_adapter", "prefix", "lora", "bias"]
PositiveFloat = Annotated[float, Field(gt=0)]
Size = Annotated[int, Field(strict=True, ge=1)]


class S3PETSettings(RecipeModel):
    """Options of the S3PET search; every default is S3Delta's (`NAS_global/argparser.py`, `scripts/S3PET-*`).

    Args:
        arch_learning_rate: AdamW rate of the architecture parameters alpha (S3Delta `--alpha_learning_rate` 0.1,
            no weight decay, linear decay to 0 over the search).
        arch_warmup_steps: linear warm-up steps of that rate (S3Delta `--alpha_warmup_steps` 0).
        arch_fraction: share of the one-shot stage's training subset held out for the architecture steps; the
            weights train on the rest. S3Delta splits the train set in two halves (0.5). The selection split is never
            used for alpha, so the driver's re-training on it stays an honest measurement.
        temperature: beta in p_i = sigmoid((alpha_i - b) / beta) at the first step (S3Delta `--beta` 1).
        final_temperature: beta at the last step, reached geometrically; None keeps `temperature` constant, as the
            reference code does (it has no schedule).
        stochastic: binary-concrete sampling of the gates, z_i = sigmoid(logit p_i + logit u_i), u ~ U(0, 1), one
            draw per step shared by the architecture and the weight step (S3Delta `--using_gumbel`,
            `--sample_once_per_step`, both true); False gates deterministically with p_i.
        shift_detach: rescale p by sum(p) / sum(p).detach() so alpha's gradient keeps the total fixed (S3Delta
            `--shift_detach` true); the values are unchanged.
        clip_grad_norm: gradient-norm clip of the alpha step (S3Delta `--clip_grad_norm` 2.0).
        modules: which of the space's modules become candidate positions (default: all of `space.modules`).
        sizes: per module, the size of its candidate blocks, or an ascending list of sizes (each one of the space's
            size options; default: the largest). A list makes nested positions per block: the first size, then each
            next size's extra channels (LoRA ranks, adapter units, prefix slots), so one super-configuration serves
            budgets from one small block to many large ones; kept chunks always give a size of the list. Small
            budgets need small first sizes: at 0.01 % of MiniLM (2,270 parameters) a rank-16 LoRA does not fit.
        nested: False (S3Delta): one search per budget, the shift solved for that budget. True: one search at the
            largest budget, discretised at every budget (cheaper, not what the paper does).
    """

    where: ClassVar[tuple[str, ...]] = ("algorithm", "settings")

    arch_learning_rate: PositiveFloat = 0.1
    arch_warmup_steps: Annotated[int, Field(strict=True, ge=0)] = 0
    arch_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    temperature: PositiveFloat = 1.0
    final_temperature: Optional[PositiveFloat] = None
    stochastic: bool = True
    shift_detach: bool = True
    clip_grad_norm: PositiveFloat = 2.0
    modules: Optional[tuple[Module, ...]] = Field(None, min_length=1)
    sizes: dict[Module, list[Size]] = Field(default_factory=dict)
    nested: bool = False

    @field_validator("modules")
    @classmethod
    def _distinct(cls, modules: Optional[tuple[str, ...]]) -> Optional[tuple[str, ...]]:
        if modules is not None and len(set(modules)) != len(modules):
            raise ValueError(f"must list distinct modules, got {list(modules)}")
        return modules

    @field_validator("sizes", mode="before")
    @classmethod
    def _one_size_is_a_list(cls, sizes: Any) -> Any:
        if isinstance(sizes, Mapping):
            return {m: [v] if isinstance(v, int) and not isinstance(v, bool) else v for m, v in sizes.items()}
        return sizes

    @field_validator("sizes")
    @classmethod
    def _ascending(cls, sizes: dict[str, list[int]]) -> dict[str, list[int]]:
        for module, value in sizes.items():
            if not value or sorted(set(value)) != value:
                raise ValueError(f"`{module}` must be a size or a non-empty ascending list of distinct sizes, got {value}")
        return sizes

    @model_validator(mode="after")
    def _sizes_of_candidates(self) -> "S3PETSettings":
        if self.modules is not None:
            extra = sorted(set(self.sizes) - set(self.modules))
            if extra:
                raise ValueError(
                    f"recipe field `algorithm.settings.sizes` names {extra}, which are not in "
                    f"`algorithm.settings.modules` {list(self.modules)}"
                )
        return self

    def temperature_at(self, step: int, total_steps: int) -> float:
        """beta at optimiser step `step` of `total_steps` (geometric from `temperature` to `final_temperature`)."""
        if self.final_temperature is None or total_steps <= 1:
            return float(self.temperature)
        fraction = min(max(step / (total_steps - 1), 0.0), 1.0)
        return float(self.temperature * (self.final_temperature / self.temperature) ** fraction)
