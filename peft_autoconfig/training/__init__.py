"""Training: task definitions, offline metrics, and the Trainer/DeepSpeed runner shared by `train` and the search."""

from .callbacks import TrainingDiverged
from .data import ModelNotFoundError
from .rotten_tomatoes import DatasetUnavailableError
from .runner import RunConfig, RunResult, run
from .tasks import BUILTIN_TASKS, TaskConfig, UnknownTaskError, load_task

__all__ = [
    "BUILTIN_TASKS",
    "DatasetUnavailableError",
    "ModelNotFoundError",
    "RunConfig",
    "RunResult",
    "TaskConfig",
    "TrainingDiverged",
    "UnknownTaskError",
    "load_task",
    "run",
]
