"""The super-configuration: every candidate position of the composite, each with its analytic parameter count.

A position is one block in one layer: the serial adapter, the parallel adapter, the prefix, or LoRA on one target
name of the space (a name may resolve to several projections, which then share the position). All positions of a
module have one size (the space's largest, or `algorithm.settings.sizes`). Counts come from
`tuners.plan.count_trainable_parameters` of a config holding that position alone, never from a formula here, and
the configuration of any set of positions is a standard `MixedPetConfig` with per-layer sizes.

One `MixedPetConfig` has one `target_modules` list for every layer, so LoRA on `query` in layer 0 and on `value` in
layer 1 is not expressible: `config_for` gives the smallest expressible config holding a set (LoRA on the union of
the kept names in every layer with LoRA), and `SuperConfiguration.cost` counts that config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ...tuners.mixed import MixedPetConfig
from ...tuners.plan import count_trainable_parameters
from ..space import MODULE_FIELDS, SearchSpace


@dataclass(frozen=True)
class Position:
    """One candidate block: `module` ("serial_adapter", "parallel_adapter", "prefix", "lora") in `layer`;
    `target` is the LoRA target name (None for the others); `paths` are the leaves inside the layer it occupies."""

    module: str
    layer: int
    target: Optional[str]
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.module}[{self.layer}]" + (f".{self.target}" if self.target else "")


class SuperConfiguration:
    """All positions of `space` (restricted by `modules`), their sizes and counts, and configs of position sets."""

    def __init__(self, space: SearchSpace, modules: Optional[Iterable[str]] = None,
                 sizes: Optional[dict[str, int]] = None) -> None:
        self.space = space
        self.modules = self._modules(space, modules)
        self.sizes = self._sizes(space, self.modules, dict(sizes or {}))
        self.lora_targets = self._lora_targets(space) if "lora" in self.modules else ()
        spec, dims = space.arch, space.dims
        placement = space.spec.fixed.get("serial_adapter_placement", "houlsby")
        site = {
            "serial_adapter": spec.serial_adapter_site(placement) if "serial_adapter" in self.modules else "",
            "parallel_adapter": spec.ffn_output,
            "prefix": spec.prefix_holder_path,
        }
        positions: list[Position] = []
        for layer in range(dims.num_layers):
            for module in self.modules:
                if module == "lora":
                    for target in self.lora_targets:
                        paths = tuple(spec.resolve_lora_targets([target]))
                        positions.append(Position("lora", layer, target, paths))
                else:
                    positions.append(Position(module, layer, None, (site[module],)))
        self.positions: tuple[Position, ...] = tuple(positions)
        self.counts: tuple[int, ...] = tuple(self.cost([i]) for i in range(len(self.positions)))
        self.total = self.cost(range(len(self.positions)))

    # -- construction checks ----------------------------------------------------------------------------------------
    @staticmethod
    def _modules(space: SearchSpace, modules: Optional[Iterable[str]]) -> tuple[str, ...]:
        if modules is None:
            return tuple(space.spec.modules)
        modules = tuple(modules)
        if not modules:
            raise ValueError(
                "recipe field `algorithm.settings.modules`: the candidate set is empty; name one or more of "
                f"the space's modules {list(space.spec.modules)}."
            )
        unknown = [m for m in modules if m not in space.spec.modules]
        if unknown:
            raise ValueError(
                f"recipe field `algorithm.settings.modules`: {unknown} are not searched by the space; allowed: "
                f"{list(space.spec.modules)} (`space.modules`)."
            )
        return modules

    @staticmethod
    def _sizes(space: SearchSpace, modules: tuple[str, ...], sizes: dict[str, int]) -> dict[str, int]:
        resolved: dict[str, int] = {}
        for module in modules:
            options = [s for s in space.size_options[module] if s > 0]
            if not options:
                raise ValueError(f"recipe field `space.sizes.{module}` has no positive size: no candidate block.")
            size = sizes.pop(module, max(options))
            if size not in options:
                raise ValueError(
                    f"recipe field `algorithm.settings.sizes.{module}`: {size} is not a size of the space; allowed: "
                    f"{options}."
                )
            resolved[module] = size
        if sizes:
            raise ValueError(
                f"recipe field `algorithm.settings.sizes`: {sorted(sizes)} are not candidate modules; allowed: "
                f"{list(modules)}."
            )
        return resolved

    @staticmethod
    def _lora_targets(space: SearchSpace) -> tuple[str, ...]:
        names = sorted({name for option in space.target_options for name in option.split(",")})
        owner: dict[str, str] = {}
        for name in names:
            for path in space.arch.resolve_lora_targets([name]):
                if path in owner:
                    raise ValueError(
                        f"recipe field `space.lora_targets`: {owner[path]!r} and {name!r} both name the projection "
                        f"{path!r}; S3PET needs one name per projection."
                    )
                owner[path] = name
        return tuple(names)

    # -- configs ------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.positions)

    def config_for(self, indices: Iterable[int]) -> MixedPetConfig:
        """The `MixedPetConfig` (per-layer sizes) holding the positions `indices` (see the module docstring)."""
        chosen = [self.positions[i] for i in indices]
        if not chosen:
            raise ValueError("a configuration needs at least one position.")
        kwargs: dict[str, Any] = dict(self.space.spec.fixed)
        for module in self.modules:
            layers = sorted({p.layer for p in chosen if p.module == module})
            if layers:
                kwargs[MODULE_FIELDS[module]] = {layer: self.sizes[module] for layer in layers}
        targets = sorted({p.target for p in chosen if p.module == "lora"})
        if targets:
            kwargs["target_modules"] = targets
        return MixedPetConfig(task_type=self.space.task_type, **kwargs)

    def super_config(self) -> MixedPetConfig:
        """Every position at once: the model the search trains."""
        return self.config_for(range(len(self.positions)))

    def cost(self, indices: Iterable[int]) -> int:
        """Analytic trainable parameters of `config_for(indices)` (the plan's count)."""
        return count_trainable_parameters(self.config_for(indices), self.space.model_config)

    def kept(self, config: MixedPetConfig) -> list[int]:
        """The positions present in `config` (LoRA positions implied by the shared target list included)."""
        targets = set(config.target_modules or ())
        present = []
        for i, p in enumerate(self.positions):
            size = config.size(MODULE_FIELDS[p.module], p.layer)
            if size > 0 and (p.module != "lora" or p.target in targets):
                present.append(i)
        return present

    def describe(self) -> list[dict[str, Any]]:
        """JSON-plain table of the positions (name, module, layer, target, size, count)."""
        return [
            {"name": p.name, "module": p.module, "layer": p.layer, "target": p.target, "size": self.sizes[p.module],
             "parameters": n}
            for p, n in zip(self.positions, self.counts)
        ]

    def check_budgets(self, budgets: list[int]) -> None:
        """`ValueError` naming `budgets[i]` and the allowed range for a budget no discretisation can meet."""
        smallest = min(self.counts)
        for i, budget in enumerate(budgets):
            if isinstance(budget, bool) or not isinstance(budget, int) or not smallest <= budget <= self.total:
                raise ValueError(
                    f"recipe field `budgets[{i}]`: {budget!r} trainable parameters is outside what S3PET can emit "
                    f"here; allowed: {smallest:,} (the smallest candidate block) .. {self.total:,} (the "
                    f"super-configuration). Smaller budgets need smaller blocks (`algorithm.settings.sizes`)."
                )
