"""Append-only, crash-safe journal of trials (`journal.jsonl`), the search's only state on disk.

Each finished trial is one JSON line, written with a single `write`, then `flush` and `os.fsync`, so a process
killed at any moment loses at most the trials still running. A torn last line (the process died mid-write) is
skipped with a warning and cut off before the next append, so the file stays one record per line.

The first line is a header with the format version and the fingerprint of the recipe's search part: resuming a
folder under a different search is refused (the cached results would answer a different question), and so is a
journal of another format version (wave 1's unversioned records, a foreign file), naming the version found.

Each key has one record; a later record for the same key replaces an earlier *failed* one (`--retry-failed`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from .trial import TRIAL_FORMAT_VERSION, TrialRecord

FORMAT_VERSION = TRIAL_FORMAT_VERSION


class JournalMismatchError(ValueError):
    """The journal in the output folder was written by a different recipe or in another format version."""


class Journal:
    """The trials of one search, keyed by `key` (a point and its fidelity); see the module docstring."""

    def __init__(self, path: str | Path, fingerprint: str, recipe: dict[str, Any] | None = None,
                 learning_rates: dict[str, float] | None = None, adapter_width_scaling: bool | None = None) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.learning_rates = learning_rates
        """The resolved per-block rates (the recipe's over the package defaults): a recipe that leaves them to the
        defaults has the same fingerprint after the defaults change, so the header records them and a resume under
        other rates is refused."""
        self.adapter_width_scaling = adapter_width_scaling
        """Like the rates, recorded in the header and checked on resume (`training.adapter_width_scaling`)."""
        self.records: dict[str, TrialRecord] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            self._append({"type": "header", "format_version": FORMAT_VERSION, "fingerprint": fingerprint, "recipe": recipe,
                          **({"learning_rates": learning_rates} if learning_rates is not None else {}),
                          **({"adapter_width_scaling": adapter_width_scaling}
                             if adapter_width_scaling is not None else {})})

    # -- reading --------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete_end = raw.rfind(b"\n") + 1
        if complete_end < len(raw):
            warnings.warn(
                f"{self.path}: the last record is incomplete (the search was killed while writing it); it is skipped.",
                stacklevel=3,
            )
            with open(self.path, "r+b") as handle:  # cut the torn tail so the next record starts on its own line
                handle.truncate(complete_end)
                handle.flush()
                os.fsync(handle.fileno())
        header_seen = False
        for number, line in enumerate(raw[:complete_end].decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{self.path}:{number}: unreadable record skipped.", stacklevel=3)
                continue
            if record.get("type") == "header":
                header_seen = True
                found = record.get("format_version")
                if found != FORMAT_VERSION:
                    raise JournalMismatchError(
                        f"{self.path} is a journal of format version {found}; this version of peft-autoconfig reads "
                        f"version {FORMAT_VERSION}. Use another `--out` folder (the old one stays readable with the "
                        "version that wrote it)."
                    )
                if record.get("fingerprint") != self.fingerprint:
                    raise JournalMismatchError(
                        f"{self.path} was written by a different recipe (fingerprint {record.get('fingerprint')}, "
                        f"this recipe {self.fingerprint}); use another `--out` folder or delete it to start over."
                    )
                self._check_learning_rates(record.get("learning_rates"))
                self._check_width_scaling(record)
            elif record.get("type") == "trial":
                if not header_seen:
                    break
                try:
                    trial = TrialRecord.from_dict({k: v for k, v in record.items() if k != "type"})
                except (TypeError, ValueError) as error:
                    raise JournalMismatchError(f"{self.path}:{number}: {error}") from None
                trial = _canonical_key(trial)
                previous = self.records.get(trial.key)
                if previous is None or not previous.ok:
                    self.records[trial.key] = trial
        if not header_seen:
            raise JournalMismatchError(f"{self.path} has no header line; it is not a peft-autoconfig journal.")

    def _check_learning_rates(self, recorded: dict[str, float] | None) -> None:
        if recorded is None or self.learning_rates is None or recorded == self.learning_rates:
            return  # journals written before the header recorded the rates cannot be checked
        # a block type added to the table since (e.g. "bias") was trained by none of the journal's trials
        changed = sorted(k for k in recorded if recorded.get(k) != self.learning_rates.get(k))
        if not changed:
            return
        details = ", ".join(f"{k}: {recorded.get(k)} -> {self.learning_rates.get(k)}" for k in changed)
        raise JournalMismatchError(
            f"{self.path} was trained with other per-block learning rates ({details}; the package defaults changed, "
            "or the recipe's `training.learning_rates`); use another `--out` folder, or pin the old rates in the recipe."
        )

    def _check_width_scaling(self, header: dict[str, Any]) -> None:
        if self.adapter_width_scaling is None:
            return
        if "adapter_width_scaling" not in header:
            if self.adapter_width_scaling:
                warnings.warn(f"{self.path} predates the adapters' width-scaled learning rates: its trials trained "
                              "adapters of every width at one rate, new trials scale the rate of adapters wider than "
                              "24 units; set `training.adapter_width_scaling: false` to keep one protocol.",
                              stacklevel=4)
            return
        if header["adapter_width_scaling"] != self.adapter_width_scaling:
            raise JournalMismatchError(
                f"{self.path} was trained with `training.adapter_width_scaling: "
                f"{str(header['adapter_width_scaling']).lower()}`, this recipe has "
                f"{str(self.adapter_width_scaling).lower()}; use another `--out` folder, or set it back.")

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> TrialRecord | None:
        return self.records.get(key)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[TrialRecord]:
        return iter(sorted(self.records.values(), key=lambda r: r.trial_id))

    # -- writing --------------------------------------------------------------------------------------------------
    def add(self, record: TrialRecord) -> TrialRecord:
        """Durably append a finished trial; its key must be new, or hold a failed trial (a retry)."""
        previous = self.records.get(record.key)
        if previous is not None and previous.ok:
            raise ValueError(f"trial {record.key!r} is already in the journal.")
        record = dataclasses.replace(record, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self._append({"type": "trial", **record.to_dict()})
        self.records[record.key] = record
        return record

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _canonical_key(record: TrialRecord) -> TrialRecord:
    """A record keyed by a config written in full (before keys used `front.config_identity`) re-keyed in memory by
    the config's identity, so the driver's requests, keyed that way, find it (the file is left as written)."""
    if record.config is None:
        return record
    from ..front import config_identity

    written = json.dumps(record.config, sort_keys=True, separators=(",", ":"), default=str)
    if written not in record.key:  # keyed by a point of the space, or already by the identity
        return record
    identity = config_identity(record.config)
    if written == identity:
        return record
    return dataclasses.replace(record, key=record.key.replace(written, identity))


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """The trials of a journal file as plain dicts (`TrialRecord.to_dict()` plus `type`), in trial-id order, one per
    key with the journal's rule (a retried trial's last attempt). Torn or unreadable lines are skipped."""
    records: dict[str, dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "trial":
            previous = records.get(record["key"])
            if previous is None or previous["status"] != "ok":
                records[record["key"]] = record
    return sorted(records.values(), key=lambda r: r["trial_id"])
