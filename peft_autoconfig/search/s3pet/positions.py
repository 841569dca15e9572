"""The super-configuration: every candidate position of the composite, each with its analytic parameter count.

A *slot* is one block in one layer: the serial adapter, the parallel adapter, the prefix, BitFit (the layer's bias
deltas on `space.fixed.bias_targets`, one on/off position), or LoRA on one target name of the space (a name may
resolve to several projections, which then share the slot). Each module has an ascending
list of sizes (default: the space's largest size alone). Slot s at sizes [s_0 < s_1 < ...] gives one position per
size: position 0 is the block at size s_0, position k > 0 the channels s_{k-1}..s_k (LoRA ranks, adapter units,
prefix slots) added on top. The super-configuration holds every block at its largest size.

Positions are nested: a configuration holding position k of a slot holds the slot at size s_k, i.e. positions
0..k too, so every size it emits is one of the list. One `MixedPetConfig` has one `target_modules` list and one LoRA
rank per layer, so LoRA positions of one layer share their rank (the largest kept) and every kept target name is
adapted in every layer with LoRA. `config_for(indices)` is the smallest expressible configuration holding `indices`
and `cost` is its count from the plan (`tuners.plan.count_trainable_parameters`), never a formula here. A position's
count n_i is the plan's count of its slot at s_k minus at s_{k-1} (s_{-1}: absent), so the counts add up to the
super-configuration's count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ...tuners.mixed import MixedPetConfig
from ...tuners.plan import count_trainable_parameters
from ..space import MODULE_FIELDS, SearchSpace


@dataclass(frozen=True)
class Position:
    """Position `chunk` of the slot (`module`, `layer`, `target`): channels `start`..`size` of the block (`size` is
    the slot's size when this position is the largest kept). `target` is the LoRA target name (None otherwise);
    `paths` are the leaves inside the layer whose blocks belong to the slot."""

    module: str
    layer: int
    target: Optional[str]
    paths: tuple[str, ...]
    chunk: int = 0
    start: int = 0
    size: int = 0
    chunked: bool = False
    """Whether the slot has several sizes (names then carry the size)."""

    @property
    def slot(self) -> tuple[str, int, Optional[str]]:
        return (self.module, self.layer, self.target)

    @property
    def name(self) -> str:
        base = f"{self.module}[{self.layer}]" + (f".{self.target}" if self.target else "")
        return base + (f"#{self.size}" if self.chunked else "")


class SuperConfiguration:
    """All positions of `space` (restricted by `modules`), their sizes and counts, and configs of position sets."""

    def __init__(self, space: SearchSpace, modules: Optional[Iterable[str]] = None,
                 sizes: Optional[dict[str, int | list[int]]] = None) -> None:
        self.space = space
        self.modules = self._modules(space, modules)
        self.size_lists = self._sizes(space, self.modules, dict(sizes or {}))
        self.sizes = {module: sizes[-1] for module, sizes in self.size_lists.items()}
        self.lora_targets = self._lora_targets(space) if "lora" in self.modules else ()
        spec = space.arch
        placement = space.spec.fixed.get("serial_adapter_placement", "houlsby")
        site = {
            "serial_adapter": spec.serial_adapter_site(placement) if "serial_adapter" in self.modules else "",
            "parallel_adapter": spec.ffn_output,
            "prefix": spec.prefix_holder_path,
        }
        bias_paths = tuple(spec.resolve_bias_targets(space.spec.fixed.get("bias_targets"))) if "bias" in self.modules else ()
        positions: list[Position] = []
        for layer in range(space.dims.num_layers):
            for module in self.modules:
                if module == "lora":
                    slots = [(t, tuple(spec.resolve_lora_targets([t]))) for t in self.lora_targets]
                else:
                    slots = [(None, bias_paths if module == "bias" else (site[module],))]
                sizes_here = self.size_lists[module]
                for target, paths in slots:
                    for chunk, size in enumerate(sizes_here):
                        start = sizes_here[chunk - 1] if chunk else 0
                        positions.append(Position(module, layer, target, paths, chunk, start, size, len(sizes_here) > 1))
        self.positions: tuple[Position, ...] = tuple(positions)
        self.counts: tuple[int, ...] = tuple(self._marginal_count(p) for p in self.positions)
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
    def _sizes(space: SearchSpace, modules: tuple[str, ...], sizes: dict[str, int | list[int]]) -> dict[str, list[int]]:
        resolved: dict[str, list[int]] = {}
        for module in modules:
            options = [s for s in space.size_options[module] if s > 0]
            if not options:
                raise ValueError(f"recipe field `space.sizes.{module}` has no positive size: no candidate block.")
            value = sizes.pop(module, max(options))
            chosen = list(value) if isinstance(value, (list, tuple)) else [value]
            bad = [s for s in chosen if s not in options]
            if bad or not chosen:
                raise ValueError(
                    f"recipe field `algorithm.settings.sizes.{module}`: {bad[0] if bad else chosen} is not a size of "
                    f"the space; allowed: {options}."
                )
            if sorted(set(chosen)) != chosen:
                raise ValueError(
                    f"recipe field `algorithm.settings.sizes.{module}`: sizes must ascend without repeats, got {chosen}."
                )
            resolved[module] = chosen
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

    def _config(self, slot_sizes: dict[tuple[str, int, Optional[str]], int]) -> MixedPetConfig:
        kwargs: dict[str, Any] = dict(self.space.spec.fixed)
        per_layer: dict[str, dict[int, int]] = {}
        for (module, layer, _), size in slot_sizes.items():
            layers = per_layer.setdefault(MODULE_FIELDS[module], {})
            layers[layer] = max(layers.get(layer, 0), size)  # LoRA: one rank per layer for every target
        kwargs.update(per_layer)
        targets = sorted({target for (module, _, target) in slot_sizes if module == "lora"})
        if targets:
            kwargs["target_modules"] = targets
        return MixedPetConfig(task_type=self.space.task_type, **kwargs)

    def slot_sizes(self, indices: Iterable[int]) -> dict[tuple[str, int, Optional[str]], int]:
        """Each slot holding some of `indices`, with its size (the largest kept position's)."""
        sizes: dict[tuple[str, int, Optional[str]], int] = {}
        for i in indices:
            p = self.positions[i]
            sizes[p.slot] = max(sizes.get(p.slot, 0), p.size)
        return sizes

    def config_for(self, indices: Iterable[int]) -> MixedPetConfig:
        """The `MixedPetConfig` (per-layer sizes) holding the positions `indices` (see the module docstring)."""
        slot_sizes = self.slot_sizes(indices)
        if not slot_sizes:
            raise ValueError("a configuration needs at least one position.")
        return self._config(slot_sizes)

    def super_config(self) -> MixedPetConfig:
        """Every position at once: the model the search trains."""
        return self.config_for(range(len(self.positions)))

    def cost(self, indices: Iterable[int]) -> int:
        """Analytic trainable parameters of `config_for(indices)` (the plan's count)."""
        return count_trainable_parameters(self.config_for(indices), self.space.model_config)

    def _marginal_count(self, position: Position) -> int:
        model_config = self.space.model_config
        count = count_trainable_parameters(self._config({position.slot: position.size}), model_config)
        if position.start:
            count -= count_trainable_parameters(self._config({position.slot: position.start}), model_config)
        return count

    def kept(self, config: MixedPetConfig) -> list[int]:
        """The positions present in `config` (those implied by nesting and by the shared LoRA rank and targets too)."""
        targets = set(config.target_modules or ())
        return [
            i for i, p in enumerate(self.positions)
            if config.size(MODULE_FIELDS[p.module], p.layer) >= p.size and (p.module != "lora" or p.target in targets)
        ]

    def describe(self) -> list[dict[str, Any]]:
        """JSON-plain table of the positions (name, module, layer, target, channels, count)."""
        return [
            {"name": p.name, "module": p.module, "layer": p.layer, "target": p.target, "chunk": p.chunk,
             "channels": [p.start, p.size], "parameters": n}
            for p, n in zip(self.positions, self.counts)
        ]

    def check_budgets(self, budgets: list[int]) -> None:
        """`ValueError` naming `budgets[i]` and the allowed range for a budget no discretisation can meet."""
        smallest = self.smallest_block()
        for i, budget in enumerate(budgets):
            if isinstance(budget, bool) or not isinstance(budget, int) or not smallest <= budget <= self.total:
                raise ValueError(
                    f"recipe field `budgets[{i}]`: {budget!r} trainable parameters is outside what S3PET can emit "
                    f"here; allowed: {smallest:,} (the smallest candidate block) .. {self.total:,} (the "
                    f"super-configuration). Smaller budgets need smaller blocks (`algorithm.settings.sizes`)."
                )

    def smallest_block(self) -> int:
        """The count of the cheapest configuration: one slot at its first size."""
        return min(self.cost([i]) for i, p in enumerate(self.positions) if p.chunk == 0)
