"""Quiet runs: transformers/datasets logs, progress bars and deprecation notices off for a block, then restored.

The search calls the runner many times in one process; its output must stay its own.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator


@contextlib.contextmanager
def datasets_progress(enabled: bool) -> Iterator[None]:
    """Switch `datasets`' progress bars on or off for a block, then restore the previous setting."""
    from datasets.utils import logging as ds_logging

    before = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if enabled else ds_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (ds_logging.enable_progress_bar if before else ds_logging.disable_progress_bar)()


@contextlib.contextmanager
def library_verbosity(show_progress: bool) -> Iterator[None]:
    """Silence transformers/datasets logs and progress bars, and deprecation notices, when progress is off.

    Everything is restored afterwards, so a caller's own settings survive a quiet run.
    """
    import datasets
    import transformers

    if show_progress:
        with datasets_progress(True):
            yield
        return
    before_tf, before_ds = transformers.logging.get_verbosity(), datasets.logging.get_verbosity()
    tf_bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        with datasets_progress(False), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        transformers.logging.set_verbosity(before_tf)
        datasets.logging.set_verbosity(before_ds)
        if tf_bars:
            transformers.utils.logging.enable_progress_bar()
