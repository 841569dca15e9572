"""Task definitions: where the data comes from, which columns hold text and label, and how to score.

A task is a `TaskConfig`: the built-in `rotten_tomatoes`, local csv/json/parquet files (one per split), or a
Hub dataset by name (for users online). `load_task` turns a name, folder, dict or config into a `TaskConfig`;
`load_splits` loads its `datasets.DatasetDict` once per process.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from .rotten_tomatoes import LABEL_NAMES as RT_LABEL_NAMES
from .rotten_tomatoes import load_rotten_tomatoes

SPLIT_ALIASES: dict[str, str] = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                                 "dev": "validation", "test": "test"}
"""File stems recognised in a task folder, and the split each one becomes."""

FILE_BUILDERS: dict[str, str] = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""File extensions of local tasks and the `datasets` builder that reads each."""

BUILTIN_LOADERS: dict[str, Callable[[], Any]] = {"rotten_tomatoes": load_rotten_tomatoes}


class UnknownTaskError(ValueError):
    """A task name that is neither built in, nor a local folder, nor reachable on the Hub."""


@dataclass
class TaskConfig:
    """A text classification (or regression) task.

    Args:
        name (`str`): a short name, used in logs, `metrics.json` and the search front.
        text_columns (`tuple[str, ...]`): one column (single sentence) or two (sentence pairs).
        label_column (`str`): integer class ids, class names (strings), or floats when `num_labels == 1`.
        data_files (`dict[str, str]`, *optional*): split name -> local csv/json/parquet file.
        dataset_name (`str`, *optional*): a Hub dataset (`datasets.load_dataset(dataset_name, dataset_config)`).
        dataset_config (`str`, *optional*): the Hub dataset's configuration (e.g. "sst2" of "glue").
        num_labels (`int`, *optional*): number of classes (1 = regression). None: inferred from the train split.
        label_names (`list[str]`, *optional*): class names in id order; maps string labels to ids.
        metric (`str` or `list[str]`): metric name(s) for `evaluate`; the first is the one the search optimises.
        max_length (`int`, *optional*): a cap on the tokenised length for this task (the run's `max_length` applies
            when smaller or when this is None).
    """

    name: str
    text_columns: tuple[str, ...] = field(default=("sentence",), metadata={"help": "One or two text columns."})
    label_column: str = field(default="label", metadata={"help": "The label column."})
    data_files: Optional[dict[str, str]] = field(default=None, metadata={"help": "Split -> local file."})
    dataset_name: Optional[str] = field(default=None, metadata={"help": "A Hub dataset name."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    num_labels: Optional[int] = field(default=None, metadata={"help": "Classes (1 = regression); None = inferred."})
    label_names: Optional[list[str]] = field(default=None, metadata={"help": "Class names in id order."})
    metric: Union[str, list[str]] = field(default="accuracy", metadata={"help": "evaluate metric name(s)."})
    max_length: Optional[int] = field(default=None, metadata={"help": "Cap on the tokenised length."})

    def __post_init__(self) -> None:
        if isinstance(self.text_columns, str):
            self.text_columns = (self.text_columns,)
        self.text_columns = tuple(self.text_columns)
        if len(self.text_columns) not in (1, 2):
            raise ValueError(f"`text_columns` must name 1 or 2 columns, got {list(self.text_columns)}.")
        if self.data_files is not None and self.dataset_name is not None:
            raise ValueError("`data_files` and `dataset_name` are exclusive: give local files or a Hub dataset.")
        if self.data_files is None and self.dataset_name is None and self.name not in BUILTIN_LOADERS:
            raise ValueError(
                f"task `{self.name}` has no data: set `data_files` or `dataset_name`, or use a built-in task "
                f"({sorted(BUILTIN_LOADERS)})."
            )
        if self.data_files is not None:
            self.data_files = {str(split): str(path) for split, path in dict(self.data_files).items()}
            suffixes = {Path(path).suffix.lower() for path in self.data_files.values()}
            unknown = suffixes - set(FILE_BUILDERS)
            if unknown:
                raise ValueError(
                    f"`data_files` has unsupported file types {sorted(unknown)}; allowed: {sorted(FILE_BUILDERS)}."
                )
            if len({FILE_BUILDERS[suffix] for suffix in suffixes}) > 1:
                raise ValueError(f"`data_files` mixes file types {sorted(suffixes)}; use one format for all splits.")
        if self.num_labels is not None and (isinstance(self.num_labels, bool) or self.num_labels < 1):
            raise ValueError(f"`num_labels` must be a positive int (1 = regression), got {self.num_labels!r}.")
        if self.label_names is not None:
            self.label_names = [str(name) for name in self.label_names]
            if self.num_labels is None:
                self.num_labels = len(self.label_names)
            elif self.num_labels != len(self.label_names):
                raise ValueError(
                    f"`label_names` has {len(self.label_names)} names but `num_labels` is {self.num_labels}."
                )
        if not self.metric_names:
            raise ValueError("`metric` must name at least one metric, e.g. 'accuracy'.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"`max_length` must be positive, got {self.max_length}.")

    @property
    def metric_names(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def cache_key(self) -> tuple:
        """Identifies the data this task reads (files with their modification times), for in-process caches."""
        files = None
        if self.data_files is not None:
            files = tuple(sorted((split, path, _mtime(path)) for split, path in self.data_files.items()))
        return (self.name, files, self.dataset_name, self.dataset_config, self.text_columns, self.label_column,
                self.num_labels, tuple(self.label_names or ()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"text_columns": list(self.text_columns)}


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return -1.0


BUILTIN_TASKS: dict[str, TaskConfig] = {
    "rotten_tomatoes": TaskConfig(
        name="rotten_tomatoes", text_columns=("sentence",), label_column="label", num_labels=2,
        label_names=list(RT_LABEL_NAMES), metric=["accuracy", "f1"],
    ),
}
"""Tasks available by name, offline."""


def discover_data_files(directory: Path) -> dict[str, str]:
    """Split files in a folder: `train.csv`, `validation.jsonl`, `dev.parquet`, ... (see `SPLIT_ALIASES`)."""
    files: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        split = SPLIT_ALIASES.get(path.stem.lower())
        if split is None or path.suffix.lower() not in FILE_BUILDERS or not path.is_file():
            continue
        if split in files:
            raise ValueError(f"task folder {directory} has two files for split `{split}`: {files[split]} and {path}.")
        files[split] = str(path)
    if "train" not in files:
        raise ValueError(
            f"task folder {directory} has no train file; expected files named "
            f"{{train,validation,test}}{{{','.join(sorted(FILE_BUILDERS))}}}, found {sorted(p.name for p in directory.iterdir())}."
        )
    return files


def _hub_offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_task(name_or_config: Union[str, os.PathLike, TaskConfig, Mapping[str, Any]], **overrides: Any) -> TaskConfig:
    """A `TaskConfig` from a built-in name, a folder of split files, a Hub dataset name, a dict or a config.

    `overrides` replace fields (e.g. `text_columns`, `label_column`, `num_labels`, `metric` from the command line).
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if isinstance(name_or_config, TaskConfig):
        task = name_or_config
    elif isinstance(name_or_config, Mapping):
        task = TaskConfig(**dict(name_or_config))
    elif isinstance(name_or_config, (str, os.PathLike)):
        name = str(name_or_config)
        path = Path(name).expanduser()
        if name in BUILTIN_TASKS:
            task = BUILTIN_TASKS[name]
        elif path.is_dir():
            task = TaskConfig(name=path.resolve().name, data_files=discover_data_files(path))
        elif path.is_file():
            raise UnknownTaskError(
                f"task `{name}` is a file; pass the folder that holds train/validation/test files instead."
            )
        elif _hub_offline():
            raise UnknownTaskError(
                f"unknown task `{name}`: not a built-in task ({', '.join(sorted(BUILTIN_TASKS))}), not a local folder, "
                "and the Hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE), so it cannot be a Hub dataset."
            )
        else:
            task = TaskConfig(name=name, dataset_name=name)
    else:
        raise TypeError(f"`task` must be a name, a folder, a dict or a TaskConfig, got {type(name_or_config).__name__}.")
    return dataclasses.replace(task, **overrides) if overrides else task


_SPLITS_CACHE: dict[tuple, Any] = {}


def load_splits(task: TaskConfig) -> Any:
    """The task's `datasets.DatasetDict` with labels checked and mapped to ids; cached per process."""
    key = task.cache_key()
    if key not in _SPLITS_CACHE:
        _SPLITS_CACHE[key] = _load_splits(task)
    return _SPLITS_CACHE[key]


def _load_splits(task: TaskConfig) -> Any:
    import datasets

    if task.data_files is not None:
        for split, path in task.data_files.items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"task `{task.name}`: the `{split}` file {path} does not exist.")
        builder = FILE_BUILDERS[Path(next(iter(task.data_files.values()))).suffix.lower()]
        kwargs = {"delimiter": "\t"} if any(p.lower().endswith(".tsv") for p in task.data_files.values()) else {}
        splits = datasets.load_dataset(builder, data_files=task.data_files, **kwargs)
    elif task.dataset_name is not None:
        try:
            splits = datasets.load_dataset(task.dataset_name, task.dataset_config)
        except (FileNotFoundError, ConnectionError, ValueError) as error:
            raise UnknownTaskError(
                f"task `{task.name}`: Hub dataset `{task.dataset_name}` could not be loaded ({error}). Built-in tasks: "
                f"{', '.join(sorted(BUILTIN_TASKS))}; or pass a folder with train/validation/test files."
            ) from error
    else:
        splits = BUILTIN_LOADERS[task.name]()
    if not isinstance(splits, datasets.DatasetDict):
        splits = datasets.DatasetDict({"train": splits})
    check_columns(task, splits)
    return map_labels(task, splits)


def check_columns(task: TaskConfig, splits: Any) -> None:
    """Every split needs the text columns; the label column may be absent only in `test` (unlabelled)."""
    for split, dataset in splits.items():
        required = list(task.text_columns) + ([task.label_column] if split != "test" else [])
        for column in required:
            if column not in dataset.column_names:
                option = "label_column (--label-column)" if column == task.label_column else "text_columns (--text-columns)"
                raise ValueError(
                    f"task `{task.name}`: column `{column}` not found in split `{split}`; columns present: "
                    f"{dataset.column_names}. Set {option}."
                )


def infer_label_names(task: TaskConfig, splits: Any) -> Optional[list[str]]:
    """Class names in id order: the task's, the dataset's ClassLabel names, or sorted distinct string labels."""
    if task.label_names is not None:
        return list(task.label_names)
    feature = splits["train"].features.get(task.label_column)
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    if getattr(feature, "dtype", None) in ("string", "large_string"):
        return sorted({str(value) for value in splits["train"][task.label_column]})
    return None


def map_labels(task: TaskConfig, splits: Any) -> Any:
    """Turn string labels into ids and check labels against `num_labels`; sets `task`-derived `num_labels`.

    Raises a `ValueError` that lists the labels present when they do not fit `num_labels` (label mismatch).
    """
    import datasets

    if task.is_regression:
        return splits.cast_column(task.label_column, datasets.Value("float32")) if "train" in splits else splits
    names = infer_label_names(task, splits)
    if names is not None and task.num_labels is not None and len(names) != task.num_labels:
        raise ValueError(
            f"task `{task.name}`: label column `{task.label_column}` has {len(names)} classes {names} but "
            f"num_labels={task.num_labels}; set num_labels={len(names)} or fix the data."
        )
    feature = splits["train"].features.get(task.label_column)
    if names is not None and getattr(feature, "dtype", None) in ("string", "large_string"):
        index = {name: i for i, name in enumerate(names)}

        def to_id(batch: dict) -> dict:
            labels = []
            for value in batch[task.label_column]:
                if value is not None and str(value) not in index:
                    raise ValueError(
                        f"task `{task.name}`: label `{value}` is not one of the label names {names}."
                    )
                labels.append(index[str(value)] if value is not None else -1)
            return {task.label_column: labels}

        mapped = {}
        for split, dataset in splits.items():
            if task.label_column not in dataset.column_names:
                mapped[split] = dataset
                continue
            features = dataset.features.copy()
            features[task.label_column] = datasets.Value("int64")
            mapped[split] = dataset.map(to_id, batched=True, keep_in_memory=True, features=features)
        splits = datasets.DatasetDict(mapped)
    num_labels, origin = task.num_labels, "num_labels"
    if num_labels is None:
        num_labels, origin = resolve_num_labels(task, splits), "inferred from the train split"
    for split, dataset in splits.items():
        if task.label_column not in dataset.column_names or split == "test":
            continue
        present = sorted(set(dataset.unique(task.label_column)))
        bad = [value for value in present if not float(value).is_integer() or value < 0
               or (num_labels is not None and value >= num_labels)]
        if bad:
            raise ValueError(
                f"task `{task.name}`: split `{split}` has labels {present[:20]} in column `{task.label_column}`, but "
                f"labels must be class ids 0..{num_labels - 1} (num_labels={num_labels}, {origin}); set num_labels "
                "or fix the data."
            )
    return splits


def resolve_num_labels(task: TaskConfig, splits: Any) -> int:
    """`task.num_labels`, else the number of classes seen in the train split (label names or max id + 1)."""
    if task.num_labels is not None:
        return task.num_labels
    names = infer_label_names(task, splits)
    if names:
        return len(names)
    values = [value for value in splits["train"].unique(task.label_column) if value is not None]
    if not values:
        raise ValueError(f"task `{task.name}`: the train split has no labels in column `{task.label_column}`.")
    return int(max(values)) + 1
