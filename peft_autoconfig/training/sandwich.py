"""Training a weight-sharing super-network with the sandwich rule (Yu et al.'s slimmable networks; Klein et al.).

Every training step runs the largest sub-network (the whole super-network) on the labels, then the smallest and
`num_random` random sub-networks, each distilled in place from the largest's (detached) outputs: KL divergence of
the temperature-softened class distributions (scaled by T^2), or the squared error for regression; without
distillation each student is trained on the labels. The losses are summed before the one backward pass, so the
gradients of all sub-networks accumulate into the shared weights and the step stays one `Trainer` step (DeepSpeed
and DDP see an ordinary loss). Evaluation runs the largest.

With `batched_students` the step's networks run in **one** forward pass instead of one each: the batch is repeated
once per network and the switch routes each copy through its own network (`SuperPet.use_rows`); the loss is the
same sum of the networks' mean losses, so the gradients are the sequential rule's (up to dropout's draws and float
rounding). It needs a switch with `use_rows` (the super-PET's) and no distillation.

What a sub-network is lives elsewhere: the trainer takes a `supernet` factory that, given the model, returns a
`Switch` (runs a sub-network in place: the backbone's `SuperNetwork`, the super-PET's `SuperPet`) and a
`SubSpace` (draws sub-networks). Both weight-sharing methods of the project train through this one trainer.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Optional, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer

from ..tuners.slicing import repeat_rows


class Switch(Protocol):
    """Runs a sub-network of the model in place: `with switch.use(sub): model(...)`; `use(None)` = the largest."""

    def use(self, sub: Any) -> ContextManager[None]: ...


class SubSpace(Protocol):
    """Where the sandwich rule draws its students from."""

    def smallest(self) -> Any: ...

    def sample(self, rng: np.random.Generator) -> Any: ...


class RowSwitch(Switch, Protocol):
    """A switch that also runs several sub-networks side by side in one batch (`rows` examples each, in order)."""

    def use_rows(self, subs: list[Any], rows: int) -> ContextManager[None]: ...


SupernetFactory = Callable[[torch.nn.Module], tuple[Switch, SubSpace]]
"""Given the model the `Trainer` trains (possibly a peft model), its switch and its space of sub-networks."""


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on softened class distributions x T^2; squared error for one output (regression)."""
    if student.shape[-1] == 1:
        return F.mse_loss(student, teacher)
    return F.kl_div(
        F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean", log_target=True,
    ) * temperature**2


def sandwich_networks(space: SubSpace, num_random: int, rng: np.random.Generator) -> dict[str, Any]:
    """The students of one step: the smallest and `num_random` random sub-networks (the largest is the teacher)."""
    students = {"smallest": space.smallest()}
    students.update({f"random_{i}": space.sample(rng) for i in range(num_random)})
    return students


def sandwich_losses(
    model: torch.nn.Module,
    supernet: Switch,
    students: dict[str, Any],
    inputs: dict[str, Any],
    temperature: float = 1.0,
    distill: bool = True,
    train_largest: bool = True,
) -> tuple[dict[str, torch.Tensor], Any]:
    """The step's losses by name ("largest": the task loss; "distill_<student>" (in-place distillation) or
    "task_<student>" (labels, `distill=False`)) and the largest network's outputs (the last student's without
    `train_largest`: the largest is then not run, and the students train on the labels). `model` may be a wrapper
    (DDP, DeepSpeed) of the model `supernet` switches."""
    if distill and not train_largest:
        raise ValueError("`train_largest=False` needs `distill=False`: the largest is the distillation teacher.")
    losses: dict[str, torch.Tensor] = {}
    outputs, teacher = None, None
    if train_largest:
        with supernet.use(None):
            outputs = model(**inputs)
        losses["largest"] = outputs.loss
        teacher = outputs.logits.detach()
    student_inputs = {k: v for k, v in inputs.items() if k != "labels"} if distill else inputs
    for name, sub in students.items():
        with supernet.use(sub):
            student = model(**student_inputs)
        if distill:
            losses[f"distill_{name}"] = distillation_loss(student.logits, teacher, temperature)
        else:
            losses[f"task_{name}"] = student.loss
    return losses, (outputs if train_largest else student)


def batched_sandwich_loss(
    model: torch.nn.Module,
    supernet: RowSwitch,
    students: dict[str, Any],
    inputs: dict[str, Any],
    train_largest: bool = True,
) -> tuple[dict[str, torch.Tensor], Any]:
    """The students (and the largest, with `train_largest`) on the labels in one forward pass over the batch
    repeated once per network: the loss is `len(networks)` x the mean loss over all rows, i.e. the sum of each
    network's mean loss, as `sandwich_losses(..., distill=False)` sums them. Returns ({"task_batched": loss}, the
    outputs of the whole repeated batch)."""
    networks = ([None] if train_largest else []) + list(students.values())
    rows = _batch_size(inputs)
    with supernet.use_rows(networks, rows):
        outputs = model(**repeat_rows(inputs, len(networks), rows))
    return {"task_batched": outputs.loss * len(networks)}, outputs


def _batch_size(inputs: dict[str, Any]) -> int:
    for name in ("input_ids", "inputs_embeds", "labels"):
        value = inputs.get(name)
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    raise ValueError("The batch has no `input_ids`, `inputs_embeds` or `labels` to count its examples: "
                     f"{sorted(inputs)}.")


class SandwichTrainer(Trainer):
    """`Trainer` whose training loss is the sandwich rule's (see the module docstring); `last_losses` holds the
    parts of the last step's loss, by name, as floats.

    Args (besides the `Trainer`'s):
        supernet: builds the switch and the space of sub-networks from the model (see `SupernetFactory`).
        num_random: random students per step (>= 0).
        temperature: distillation temperature (> 0).
        distill: in-place distillation from the largest (True) or the labels for every student (False).
        largest_only_fraction: the first fraction of the steps trains the largest network alone (a fine-tuned
            teacher before the students start, as DynaBERT does), in [0, 1).
        before_sandwich: called once with the trainer at the first sandwich step after that warm-up (at a step
            boundary: the backbone's network rewiring, `backbone.rewiring.RewireAfterWarmup`).
        train_largest: run the largest network every step (the rule's default). False trains only the students,
            on the labels (needs `distill=False`, excludes a largest-only warm-up): for super-networks whose largest
            member does not train at the rates its members do (the super-PET, RESULTS.md section 13).
        batched_students: run the step's networks in one forward pass over the repeated batch (see the module
            docstring; needs `distill=False` and a switch with `use_rows`). The same loss and gradients, fewer and
            larger passes: faster where a step is bound by kernel launches (a small model on a GPU), not on a CPU.
    """

    def __init__(
        self,
        *args: Any,
        supernet: SupernetFactory,
        num_random: int = 2,
        temperature: float = 1.0,
        distill: bool = True,
        largest_only_fraction: float = 0.0,
        before_sandwich: Optional[Callable[["SandwichTrainer"], Any]] = None,
        train_largest: bool = True,
        batched_students: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if batched_students and distill:
            raise ValueError("`batched_students=True` trains every network on the labels in one pass: it needs "
                             "`distill=False`.")
        if not train_largest and (distill or largest_only_fraction):
            raise ValueError("`train_largest=False` trains the students on the labels: it needs `distill=False` and "
                             f"`largest_only_fraction=0`, got distill={distill}, "
                             f"largest_only_fraction={largest_only_fraction}.")
        if num_random < 0:
            raise ValueError(f"`supernet.num_random` must be >= 0, got {num_random}.")
        if not temperature > 0:
            raise ValueError(f"`supernet.temperature` must be > 0, got {temperature}.")
        if not 0.0 <= largest_only_fraction < 1.0:
            raise ValueError(f"`largest_only_fraction` must be in [0, 1), got {largest_only_fraction}.")
        self.supernet, self.space = supernet(self.model)
        if batched_students and not hasattr(self.supernet, "use_rows"):
            raise ValueError(f"`batched_students=True` needs a switch that runs networks side by side (`use_rows`, "
                             f"the super-PET's); {type(self.supernet).__name__} has none.")
        self.batched_students = batched_students
        self.largest_only_fraction = largest_only_fraction
        self.before_sandwich = before_sandwich
        self.sandwich_started = False
        self.num_random = num_random
        self.temperature = temperature
        self.distill = distill
        self.train_largest = train_largest
        self.last_losses: dict[str, float] = {}

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: Optional[torch.Tensor] = None,
    ) -> Any:
        if not model.training:
            with self.supernet.use(None):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.state.global_step < int(self.largest_only_fraction * self.state.max_steps):
            with self.supernet.use(None):
                loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            self.last_losses = {"largest": float(loss.detach())}
            return (loss, outputs) if return_outputs else loss
        if not self.sandwich_started:
            self.sandwich_started = True
            if self.before_sandwich is not None:
                self.before_sandwich(self)
        # seeded by the step, so a resumed run draws the same sub-networks
        rng = np.random.default_rng([self.args.seed, self.state.global_step])
        students = sandwich_networks(self.space, self.num_random, rng)
        if self.batched_students:
            losses, outputs = batched_sandwich_loss(model, self.supernet, students, inputs, self.train_largest)
        else:
            losses, outputs = sandwich_losses(model, self.supernet, students, inputs, self.temperature,
                                              self.distill, self.train_largest)
        loss = torch.stack(list(losses.values())).sum()
        self.last_losses = {name: float(value.detach()) for name, value in losses.items()}
        return (loss, outputs) if return_outputs else loss
