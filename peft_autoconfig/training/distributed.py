"""Process-group and DeepSpeed set-up for runs started without a launcher, or on CPU.

The runner calls `prepare_distributed_environment` before anything imports DeepSpeed and takes the Trainer's
distributed arguments from `distributed_training_kwargs`; launched GPU runs are left as the launcher set them.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Optional


def free_port() -> int:
    """A free local TCP port for a one-process world's `MASTER_PORT`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_distributed_environment(deepspeed: Optional[str]) -> None:
    """The environment DeepSpeed needs when no launcher set it up.

    Without CUDA, DeepSpeed uses its CPU accelerator (`DS_ACCELERATOR=cpu`, gloo). Without a launcher
    (no `RANK` from torchrun, deepspeed or accelerate launch) it would try MPI, so we declare a one-process
    world on a free local port. Launched runs are left as the launcher set them.
    """
    if deepspeed is None:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ and "LOCAL_RANK" not in os.environ:
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
            MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
            MASTER_PORT=os.environ.get("MASTER_PORT", str(free_port())),
        )


def configure_cpu_deepspeed_state() -> None:
    """Set up accelerate's process state for DeepSpeed on CPU before `TrainingArguments` does it wrongly.

    On CPU accelerate finds no backend for DeepSpeed and records one process (`num_processes=1`) even when
    several are launched, so "auto" batch sizes fail DeepSpeed's check and batches are not sharded. Creating
    the state ourselves with gloo (then `use_configured_state`) gives DeepSpeed the true world.
    """
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def distributed_training_kwargs(deepspeed: Optional[str]) -> dict[str, Any]:
    """`TrainingArguments` fields for the process world (one process, torchrun/accelerate, DeepSpeed; CPU or GPU).

    accelerate only sets up multi-process CPU training (gloo) when told `use_cpu`; else each process trains alone.
    Sets up accelerate's state for DeepSpeed on CPU as a side effect (see `configure_cpu_deepspeed_state`).
    """
    import torch

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 or deepspeed is not None
    cpu_distributed = distributed and not torch.cuda.is_available()
    cpu_deepspeed = cpu_distributed and deepspeed is not None
    if cpu_deepspeed:
        configure_cpu_deepspeed_state()
    return {
        "deepspeed": deepspeed,
        # per-process mean losses: without this, 2 processes report twice the loss
        "average_tokens_across_devices": False,
        "ddp_find_unused_parameters": False,  # every PET parameter takes part in the forward pass
        "dataloader_pin_memory": torch.cuda.is_available(),
        "use_cpu": cpu_distributed and deepspeed is None,
        "ddp_backend": "gloo" if cpu_distributed else None,
        "accelerator_config": {"use_configured_state": True} if cpu_deepspeed else None,
    }
