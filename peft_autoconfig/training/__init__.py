"""Training: task definitions, offline metrics, per-block optimisation, and the Trainer/DeepSpeed runner shared by
`train` and the search."""

from .callbacks import TrainingDiverged
from .data import ModelNotFoundError
from .optim import DEFAULT_LEARNING_RATES, pet_optimizer, pet_optimizer_cls_and_kwargs, pet_parameter_groups
from .rotten_tomatoes import DatasetUnavailableError
from .runner import RunConfig, RunResult, run
from .tasks import BUILTIN_TASKS, TaskConfig, UnknownTaskError, load_task

__all__ = [
    "BUILTIN_TASKS",
    "DEFAULT_LEARNING_RATES",
    "DatasetUnavailableError",
    "ModelNotFoundError",
    "RunConfig",
    "RunResult",
    "TaskConfig",
    "TrainingDiverged",
    "UnknownTaskError",
    "load_task",
    "pet_optimizer",
    "pet_optimizer_cls_and_kwargs",
    "pet_parameter_groups",
    "run",
]
