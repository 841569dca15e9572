"""The model of a run: a sequence-classification model with a fresh head, PEFT applied, parameters counted."""

from __future__ import annotations

import copy
import logging
from typing import Any, Optional

from .data import model_not_found
from .optim import is_head_parameter

logger = logging.getLogger(__name__)


def load_model(model_name_or_path: str, num_labels: int, tokenizer: Any, label_names: Optional[list[str]]) -> Any:
    """A sequence-classification model with a fresh head of `num_labels` (replacing a head of another size)."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {"num_labels": num_labels, "ignore_mismatched_sizes": True}
    if label_names and len(label_names) == num_labels:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    if num_labels == 1:
        kwargs["problem_type"] = "regression"
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, **kwargs)
    except OSError as error:
        raise model_not_found(model_name_or_path, error) from error
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def apply_peft(model: Any, peft_config: Any) -> Any:
    """`get_peft_model` on a copy of the config (peft fills fields in place; the search reuses its configs).

    A config without `task_type` gets "SEQ_CLS", so peft trains and saves the classification head.
    """
    from peft import get_peft_model

    config = copy.deepcopy(peft_config)
    if getattr(config, "task_type", None) is None:
        logger.warning("peft config has no task_type; using SEQ_CLS so the classification head is trained and saved.")
        config.task_type = "SEQ_CLS"
    return get_peft_model(model, config)


def load_init_adapter(model: Any, path: str) -> None:
    """Start `model` (a peft model) from the weights of the adapter folder `path`, saved for the same config
    (a warm start, e.g. from a super-PET's slice); a folder that does not fit is refused naming `init_adapter`."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    try:
        weights = load_peft_weights(path)
        result = set_peft_model_state_dict(model, weights)
    except (OSError, ValueError) as error:
        raise ValueError(f"`init_adapter`: cannot read adapter weights from {path!r}: {error}") from None
    except RuntimeError as error:  # shape mismatch
        raise ValueError(f"`init_adapter`: the weights in {path!r} do not fit the config: {error}") from None
    if result.unexpected_keys:
        raise ValueError(f"`init_adapter`: {path!r} holds weights the config does not have: "
                         f"{sorted(result.unexpected_keys)[:5]}.")


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable parameters without the head, with the head), as saved: a prefix trained through an MLP counts its
    folded keys/values (`count_trainable_parameters`), not the MLP (`count_training_parameters`)."""
    from ..tuners.blocks import PrefixKV

    with_head = without_head = -sum(m.training_surplus() for m in model.modules() if isinstance(m, PrefixKV))
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        count = parameter.numel()
        if hasattr(parameter, "ds_numel"):  # ZeRO-3 partitioned parameter
            count = parameter.ds_numel
        with_head += count
        if not is_head_parameter(name):
            without_head += count
    return without_head, with_head
