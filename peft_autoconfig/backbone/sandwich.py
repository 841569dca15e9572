"""Stage 1: fine-tune the model as a weight-sharing super-network with the sandwich rule (Klein et al., after
Yu et al.'s slimmable networks).

Every training step runs the largest sub-network (the full model) on the labels, then the smallest and
`num_random` random sub-networks of the space, each distilled in place from the largest's (detached) outputs:
KL divergence of the temperature-softened class distributions (scaled by T^2), or the squared error for
regression. The losses are summed before the one backward pass, so the gradients of all sub-networks are
accumulated into the shared weights and the step stays one `Trainer` step (DeepSpeed and DDP see an ordinary
loss). Evaluation runs the full model.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer

from .masking import SuperNetwork
from .space import BackboneSpace, Dims, SubNetwork


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on softened class distributions x T^2; squared error for one output (regression)."""
    if student.shape[-1] == 1:
        return F.mse_loss(student, teacher)
    return F.kl_div(
        F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean", log_target=True,
    ) * temperature**2


def sandwich_networks(space: BackboneSpace, num_random: int, rng: np.random.Generator) -> dict[str, SubNetwork]:
    """The students of one step: the smallest and `num_random` random sub-networks (the largest is the teacher)."""
    students = {"smallest": space.smallest()}
    students.update({f"random_{i}": space.sample(rng) for i in range(num_random)})
    return students


def sandwich_losses(
    model: torch.nn.Module,
    supernet: SuperNetwork,
    students: dict[str, SubNetwork],
    inputs: dict[str, Any],
    temperature: float = 1.0,
) -> tuple[dict[str, torch.Tensor], Any]:
    """The step's losses by name ("largest": the task loss; "distill_<student>": in-place distillation) and the
    largest network's outputs. `model` may be a wrapper (DDP, DeepSpeed) of the model `supernet` masks."""
    with supernet.use(None):
        outputs = model(**inputs)
    teacher = outputs.logits.detach()
    losses = {"largest": outputs.loss}
    student_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    for name, sub in students.items():
        with supernet.use(sub):
            logits = model(**student_inputs).logits
        losses[f"distill_{name}"] = distillation_loss(logits, teacher, temperature)
    return losses, outputs


class SandwichTrainer(Trainer):
    """`Trainer` whose training loss is the sandwich rule's (see the module docstring); `last_losses` holds the
    parts of the last step's loss, by name, as floats."""

    def __init__(
        self,
        *args: Any,
        granularity: str = "medium",
        min_layers: int = 1,
        min_heads: int = 1,
        min_units: int = 1,
        num_random: int = 2,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if num_random < 0:
            raise ValueError(f"`supernet.num_random` must be >= 0, got {num_random}.")
        if not temperature > 0:
            raise ValueError(f"`supernet.temperature` must be > 0, got {temperature}.")
        self.supernet = SuperNetwork(self.model)
        self.space = BackboneSpace(Dims.from_config(self.supernet.model.config), granularity, min_layers, min_heads,
                                   min_units)
        self.num_random = num_random
        self.temperature = temperature
        self.last_losses: dict[str, float] = {}

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: Optional[torch.Tensor] = None,
    ) -> Any:
        if not model.training:
            with self.supernet.use(None):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # seeded by the step, so a resumed run draws the same sub-networks
        rng = np.random.default_rng([self.args.seed, self.state.global_step])
        students = sandwich_networks(self.space, self.num_random, rng)
        losses, outputs = sandwich_losses(model, self.supernet, students, inputs, self.temperature)
        loss = torch.stack(list(losses.values())).sum()
        self.last_losses = {name: float(value.detach()) for name, value in losses.items()}
        return (loss, outputs) if return_outputs else loss
