"""Bi-level, first-order training of the super-configuration on `transformers.Trainer`.

Each optimiser step of `S3PETTrainer` is two steps, in S3Delta's order (`trainer.py`, `train_step`):

1. architecture step: a batch of the held-out slice of the training data, gates sampled from alpha with gradient,
   `torch.autograd.grad(loss, alpha)` (no weight gradient is formed), clipped, one AdamW step of alpha;
2. weight step: the Trainer's own `training_step` on a training batch with the gates recomputed from the new alpha
   but detached, so only the PET weights (and head) get gradients, which the Trainer's optimizer applies.

First order: the architecture gradient is taken at the current weights (DARTS' first-order approximation), not
through a virtual weight step as S3Delta's `Architect.unrolled_backward` does. The same noise draw serves both steps
(S3Delta's `--sample_once_per_step`). The temperature follows `S3PETSettings.temperature_at`, alpha's rate a linear
warm-up and decay over the run. At the end, `evaluate` scores the discretisation at each budget with hard 0/1 gates
and the super-configuration with p as gates, on the evaluation split the runner gives (the selection split).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, get_linear_schedule_with_warmup

from ...training.callbacks import TrainingDiverged
from .discretise import Discretisation, discretise
from .gates import GateController, install_gates
from .positions import SuperConfiguration
from .settings import S3PETSettings


@dataclass
class SearchState:
    """One search: what the strategy gives the trainer (through the runner's `trainer_kwargs`) and gets back."""

    superconfig: SuperConfiguration
    controller: GateController
    settings: S3PETSettings
    score_budgets: list[int]
    """Budgets to discretise and score at the end (the search's own budget, or all of them when nested)."""
    progress: bool = False
    description: str = "s3pet"
    history: list[dict[str, float]] = field(default_factory=list)
    last: dict[str, float] = field(default_factory=dict)
    probabilities: list[float] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    discretisations: dict[int, Discretisation] = field(default_factory=dict)
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    super_metrics: dict[str, float] = field(default_factory=dict)
    weight_examples: int = 0
    arch_examples: int = 0


def split_for_architecture(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """(weight part, architecture part) of a training `datasets.Dataset`, a seeded split (S3Delta: halves)."""
    n = len(dataset)
    n_arch = int(round(n * fraction))
    if n < 2 or not 1 <= n_arch <= n - 1:
        raise ValueError(
            f"recipe field `algorithm.settings.arch_fraction`: {fraction} of {n} training examples leaves no "
            "examples for the weights or for the architecture; use a larger `train_subset` or another fraction."
        )
    parts = dataset.train_test_split(test_size=n_arch, shuffle=True, seed=seed)
    return parts["train"], parts["test"]


class S3PETTrainer(Trainer):
    """`Trainer` whose every step is an architecture step and a weight step (see the module docstring)."""

    def __init__(self, *args: Any, s3pet: SearchState, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.s3pet = s3pet
        self.train_dataset, self.arch_dataset = split_for_architecture(
            self.train_dataset, s3pet.settings.arch_fraction, self.args.seed
        )
        s3pet.weight_examples, s3pet.arch_examples = len(self.train_dataset), len(self.arch_dataset)
        s3pet.controller.to(self.args.device)
        self.gates = install_gates(self.model, s3pet.superconfig, s3pet.controller)
        self.noise_generator = torch.Generator().manual_seed(self.args.seed)
        self.arch_optimizer: Optional[torch.optim.Optimizer] = None
        self.arch_scheduler: Any = None
        self._arch_batches: Optional[Iterator[dict]] = None
        self._refresh_every = 1
        self.progress_callback = S3PETProgressCallback(s3pet)
        self.add_callback(self.progress_callback)

    # -- the architecture side --------------------------------------------------------------------------------------
    def _arch_batch(self) -> dict[str, Any]:
        if self._arch_batches is None:
            self._arch_batches = self._cycle_arch_batches()
        return self._prepare_inputs(next(self._arch_batches))

    def _cycle_arch_batches(self) -> Iterator[dict]:
        generator = torch.Generator().manual_seed(self.args.seed + 1)
        loader = torch.utils.data.DataLoader(
            self.arch_dataset, batch_size=self.args.per_device_train_batch_size, shuffle=True,
            generator=generator, collate_fn=self.data_collator,
        )
        while True:
            yield from loader

    def _make_arch_optimizer(self) -> None:
        settings = self.s3pet.settings
        self.arch_optimizer = torch.optim.AdamW([self.s3pet.controller.alpha], lr=settings.arch_learning_rate,
                                                weight_decay=0.0)
        self.arch_scheduler = get_linear_schedule_with_warmup(
            self.arch_optimizer, settings.arch_warmup_steps, max(self.state.max_steps, 1)
        )
        self._refresh_every = max(1, self.state.max_steps // 50)

    def architecture_step(self, model: torch.nn.Module, noise: Optional[torch.Tensor]) -> dict[str, float]:
        """One AdamW step of alpha on a held-out batch; the weights get no gradient. Returns loss (and accuracy)."""
        if self.arch_optimizer is None:
            self._make_arch_optimizer()
        controller = self.s3pet.controller
        batch = self._arch_batch()
        model.train()
        controller.sample(noise)
        with self.compute_loss_context_manager():
            outputs = model(**batch)
        loss = outputs["loss"]
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the architecture step's loss became {loss.item()} at step {self.state.global_step}.")
        (grad,) = torch.autograd.grad(loss, [controller.alpha])
        controller.alpha.grad = grad
        torch.nn.utils.clip_grad_norm_([controller.alpha], self.s3pet.settings.clip_grad_norm)
        self.arch_optimizer.step()
        self.arch_scheduler.step()
        self.arch_optimizer.zero_grad(set_to_none=True)
        record = {"arch_loss": float(loss.detach())}
        logits, labels = outputs.get("logits"), batch.get("labels")
        if logits is not None and labels is not None and logits.ndim == 2 and logits.shape[-1] > 1:
            record["heldout_accuracy"] = float((logits.argmax(-1) == labels).float().mean())
        return record

    # -- one bi-level step ------------------------------------------------------------------------------------------
    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        state, controller = self.s3pet, self.s3pet.controller
        start = time.perf_counter()
        controller.temperature = state.settings.temperature_at(self.state.global_step, self.state.max_steps)
        noise = controller.draw_noise(self.noise_generator) if state.settings.stochastic else None
        record = self.architecture_step(model, noise)
        controller.sample(noise, detach=True)
        loss = super().training_step(model, inputs, num_items_in_batch)
        record["step_s"] = time.perf_counter() - start  # both passes (the optimizer step of the weights excluded)
        record.update(step=self.state.global_step + 1, temperature=controller.temperature, shift=controller.shift,
                      expected_parameters=controller.expected_parameters())
        if record["step"] % self._refresh_every == 0 or record["step"] >= self.state.max_steps:
            with torch.no_grad():
                p = controller.probabilities().detach().cpu().numpy()
            record["kept_parameters"] = discretise(state.superconfig, p, controller.budget).trainable_parameters
        state.history.append(record)
        state.last.update(record)
        return loss

    # -- scoring ----------------------------------------------------------------------------------------------------
    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict:
        """Score each budget's discretisation (hard gates) and then the super-configuration (p as gates); returns
        the latter, which the runner reports as the one-shot stage's metric."""
        state, controller = self.s3pet, self.s3pet.controller
        with torch.no_grad():
            p = controller.probabilities().detach().cpu().numpy()
        state.probabilities = [float(v) for v in p]
        state.alpha = [float(v) for v in controller.alpha.detach().cpu()]
        for budget in state.score_budgets:
            chosen = discretise(state.superconfig, p, budget)
            state.discretisations[budget] = chosen
            controller.set_mask(chosen.kept)
            state.scores[budget] = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        controller.use_probabilities()
        state.super_metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        self.progress_callback.close()
        return state.super_metrics


class S3PETProgressCallback(TrainerCallback):
    """A tqdm bar over the search's steps: loss, expected and discretised parameter counts, held-out accuracy."""

    def __init__(self, state: SearchState) -> None:
        self.state = state
        self.bar: Any = None
        self.loss: Optional[float] = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.state.progress and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc=self.state.description, unit="step", dynamic_ncols=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict] = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is None:
            return
        self.bar.update(state.global_step - self.bar.n)
        last = self.state.last
        postfix = {"E[n]": f"{last.get('expected_parameters', math.nan):,.0f}"}
        if "kept_parameters" in last:
            postfix["kept n"] = f"{last['kept_parameters']:,}"
        if "heldout_accuracy" in last:
            postfix["held-out acc"] = f"{np.mean([r.get('heldout_accuracy', np.nan) for r in self.state.history[-20:]]):.3f}"
        postfix["T"] = f"{last.get('temperature', math.nan):.3g}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Optional[dict] = None, **kwargs: Any) -> None:
        if self.bar is not None and metrics:
            shown = {k[len("eval_"):]: f"{v:.4f}" for k, v in metrics.items()
                     if k.startswith("eval_") and isinstance(v, float) and k not in ("eval_loss", "eval_runtime")
                     and not k.endswith("per_second")}
            self.bar.set_postfix(shown)

    def close(self) -> None:
        """Called after the final scoring (the bar shows the scores until then)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
