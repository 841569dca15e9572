"""Shared fixtures: tiny random models (built from configs, never downloaded) and a small synthetic task."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import peft_autoconfig  # noqa: E402,F401  (registers the methods)

VOCAB_SIZE = 120
WORDS = ["good", "great", "fine", "nice", "bad", "awful", "poor", "dull"] + [f"w{i}" for i in range(40)]


def tiny_configs() -> dict:
    """Tiny configs of the four supported families (GQA for Llama)."""
    from transformers import BertConfig, GPT2Config, LlamaConfig, RobertaConfig

    return {
        "bert": BertConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48
        ),
        "roberta": RobertaConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
            pad_token_id=1, max_position_embeddings=64,
        ),
        "llama": LlamaConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=56, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        ),
        "gpt2": GPT2Config(
            vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
            pad_token_id=0,
        ),
    }


def tiny_model(family: str, attn_implementation: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    """A tiny random model: sequence classification for encoders, causal LM for decoders."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = tiny_configs()[family]
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    if family in ("bert", "roberta"):
        config.num_labels = 2
        return AutoModelForSequenceClassification.from_config(config).eval()
    return AutoModelForCausalLM.from_config(config).eval()


def copy_leading_slices(small: torch.nn.Module, large: torch.nn.Module, marker: str = "mixed_pet_") -> None:
    """Copy into each PET weight of `small` the leading slice of the same weight of `large` (a super-configuration),
    so a gated or sliced super-model can be compared with the stand-alone configuration it stands for."""
    full = dict(large.named_parameters())
    with torch.no_grad():
        for name, parameter in small.named_parameters():
            if marker in name:
                parameter.copy_(full[name][tuple(slice(0, n) for n in parameter.shape)])


@pytest.fixture
def make_tiny_model():
    return tiny_model


def write_word_tokenizer(directory: Path) -> None:
    """A WordPiece tokenizer over `WORDS`, saved as a fast BERT tokenizer (no download)."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=True)  # transformers 5 ignores `vocab_file`
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A saved tiny BERT for sequence classification plus tokenizer: a local `model_name_or_path`."""
    from transformers import BertConfig, BertForSequenceClassification

    directory = tmp_path_factory.mktemp("tiny-bert")
    write_word_tokenizer(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences whose label is 1 iff they contain more positive than negative words: learnable in a few steps."""
    rng = random.Random(seed)
    positive, negative, filler = WORDS[:4], WORDS[4:8], WORDS[8:]
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        strong = positive if label else negative
        words = rng.sample(filler, 4) + rng.choices(strong, k=2)
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session")
def synthetic_task_dir(tmp_path_factory) -> Path:
    """train.csv / validation.csv / test.csv with columns `sentence,label`."""
    directory = tmp_path_factory.mktemp("synthetic-task")
    for split, n, seed in (("train", 256, 0), ("validation", 64, 1), ("test", 64, 2)):
        with open(directory / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["sentence", "label"])
            writer.writeheader()
            writer.writerows(synthetic_rows(n, seed))
    return directory
