"""`AutoSearchedConfig.from_pretrained`: a searched PEFT config from a Hub repo or a local folder, in one line.

A repo (or folder) holds either a whole front (front.json + one config folder per point) or one config
(adapter_config.json at the root). For a front, a point is chosen by rule (`select`, `max_parameters`) or named
(`subfolder`). Files come through `hf_hub_download`, so they are cached and later calls work offline; only
front.json and adapter_config.json files are fetched and parsed (JSON only, no remote code), plus the safetensors
mask file that a config names relatively in `weight_masks` (bool tensors, next to the config in the cache).

Before downloading anything the repo listing is read (`HfApi.model_info`), so a repo without a config fails with
nothing written to the cache. Offline (unreachable Hub or HF_HUB_OFFLINE=1) the cache alone is used.
"""

from __future__ import annotations

import logging
import os
import posixpath
from pathlib import Path

from peft import PeftConfig

from ..front import CONFIG_FILE, FRONT_FILE, Front, relative_weight_masks
from .errors import HubConfigError, HubConnectionError
from .push import hub_errors
from .validation import SELECT_RULES, read_config, read_front, relative_path, select_point

logger = logging.getLogger(__name__)


class _LocalFolder:
    """A local folder laid out like a pushed repo (or a search output folder)."""

    def __init__(self, root: Path) -> None:
        self.root, self.name = root, str(root)

    def listing(self) -> set[str] | None:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*.json") if p.is_file()}

    def fetch(self, filename: str) -> Path:
        return self.root / filename


class _HubRepo:
    """A Hub repo read through huggingface_hub's cache; falls back to the cache alone when offline."""

    def __init__(self, repo_id: str, revision: str | None, token: str | None, cache_dir: str | None,
                 endpoint: str | None, local_files_only: bool) -> None:
        from huggingface_hub import HfApi

        self.name, self.revision, self.token, self.cache_dir = repo_id, revision, token, cache_dir
        self.api = HfApi(endpoint=endpoint, token=token)
        self.offline = local_files_only

    def listing(self) -> set[str] | None:
        """Files of the revision, or None when the Hub cannot be reached (then only the cache is used)."""
        import httpx2
        from huggingface_hub import constants
        from huggingface_hub.errors import OfflineModeIsEnabled

        if self.offline or constants.is_offline_mode():
            self.offline = True
            return None
        with hub_errors(self.name, self.api.endpoint, self.token, "list the repo files"):
            try:
                info = self.api.model_info(self.name, revision=self.revision, token=self.token)
            except (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled) as error:
                logger.warning("%s: Hub unreachable (%s); using the local cache.", self.name, error)
                self.offline = True
                return None
        return {sibling.rfilename for sibling in info.siblings or []}

    def fetch(self, filename: str) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            with hub_errors(self.name, self.api.endpoint, self.token, f"download {filename}"):
                return Path(hf_hub_download(
                    self.name, filename, revision=self.revision, cache_dir=self.cache_dir, token=self.token,
                    endpoint=self.api.endpoint, local_files_only=self.offline,
                ))
        except LocalEntryNotFoundError:
            raise HubConnectionError(
                f"{self.name}: {filename} is not in the local cache ({self.cache_dir or 'HF_HUB_CACHE'}) and the Hub "
                f"at {self.api.endpoint} cannot be reached; connect once to download it."
            ) from None


class AutoSearchedConfig:
    """Load the right `PeftConfig` subclass (ours or any peft method) from a repo id or a folder.

    Use `AutoSearchedConfig.from_pretrained(...)`; the class is not meant to be instantiated, like transformers'
    Auto classes.
    """

    def __init__(self) -> None:
        raise OSError("AutoSearchedConfig is used through `AutoSearchedConfig.from_pretrained(repo_id_or_path)`.")

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_path: str | os.PathLike,
        subfolder: str | None = None,
        revision: str | None = None,
        select: str | None = None,
        max_parameters: int | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        endpoint: str | None = None,
        local_files_only: bool = False,
    ) -> PeftConfig:
        """Return the config of one point (or the only config) of `repo_id_or_path`.

        Args:
            repo_id_or_path: "org/name" on the Hub, or a local folder (a search output or a config folder).
            subfolder: an explicit point, e.g. "front/p03" (excludes `select`/`max_parameters`).
            revision: branch, tag or commit; default main.
            select: rule for a front: "best_metric" (default), "fewest_parameters", or "best_under_budget".
            max_parameters: keep points with at most this many trainable parameters (implies "best_under_budget"
                when `select` is None).
            token, cache_dir, endpoint, local_files_only: passed to huggingface_hub (defaults: HF_TOKEN/login,
                HF_HUB_CACHE, HF_ENDPOINT, False).
        """
        location, files = cls._open(repo_id_or_path, revision, token, cache_dir, endpoint, local_files_only)
        if subfolder is not None:
            if select is not None or max_parameters is not None:
                raise ValueError("Pass either `subfolder` (an explicit point) or `select`/`max_parameters`, not both.")
            subfolder = relative_path(str(subfolder), location.name, "subfolder")
            return cls._load_config(location, files, f"{subfolder}/{CONFIG_FILE}")
        if select is not None and select not in SELECT_RULES:
            raise ValueError(f"`select` must be one of {list(SELECT_RULES)}, got {select!r}.")
        if max_parameters is not None and (isinstance(max_parameters, bool) or not isinstance(max_parameters, int)
                                           or max_parameters < 0):
            raise ValueError(f"`max_parameters` must be a non-negative int, got {max_parameters!r}.")
        front = cls._front(location, files)
        if front is None:
            if select is not None or max_parameters is not None:
                raise HubConfigError(
                    f"{location.name}: `select`/`max_parameters` choose a point of a front, but the repo holds a "
                    f"single {CONFIG_FILE} (no {FRONT_FILE})."
                )
            return cls._load_config(location, files, CONFIG_FILE)
        point = select_point(front, select, max_parameters, f"{location.name}: {FRONT_FILE}")
        logger.info("%s: chose point %s (%s=%s, %s trainable parameters)", location.name, point.name,
                    front.metric, point.metric, point.trainable_parameters)
        return cls._load_config(location, files, f"{point.config_path}/{CONFIG_FILE}",
                                note=f" (point {point.name!r} of {FRONT_FILE})")

    @classmethod
    def load_front(cls, repo_id_or_path: str | os.PathLike, revision: str | None = None, token: str | None = None,
                   cache_dir: str | os.PathLike | None = None, endpoint: str | None = None,
                   local_files_only: bool = False) -> Front:
        """The validated front.json of a pushed front (a `peft_autoconfig.front.Front`), to inspect its points."""
        location, files = cls._open(repo_id_or_path, revision, token, cache_dir, endpoint, local_files_only)
        front = cls._front(location, files)
        if front is None:
            raise HubConfigError(f"{location.name}: no {FRONT_FILE}; this repo holds a single config.")
        return front

    # -- helpers ---------------------------------------------------------------------------------------------
    @staticmethod
    def _open(repo_id_or_path, revision, token, cache_dir, endpoint, local_files_only):
        path = Path(repo_id_or_path)
        if path.is_dir():
            location: _LocalFolder | _HubRepo = _LocalFolder(path)
        else:
            repo_id = str(repo_id_or_path)
            if repo_id.count("/") > 1 or repo_id.startswith((".", "/")) or not repo_id.strip("/"):
                raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a Hub repo id ('org/name').")
            location = _HubRepo(repo_id, revision, token, None if cache_dir is None else str(cache_dir), endpoint,
                                local_files_only)
        return location, location.listing()

    @staticmethod
    def _has(location, files: set[str] | None, filename: str) -> bool:
        if files is not None:
            return filename in files
        try:  # offline: the cache decides
            location.fetch(filename)
            return True
        except HubConnectionError:
            return False

    @classmethod
    def _front(cls, location, files: set[str] | None) -> Front | None:
        if cls._has(location, files, FRONT_FILE):
            return read_front(location.fetch(FRONT_FILE), f"{location.name}: {FRONT_FILE}")
        if cls._has(location, files, CONFIG_FILE):
            return None
        if files is None:
            raise HubConnectionError(
                f"{location.name}: the Hub cannot be reached and neither {FRONT_FILE} nor {CONFIG_FILE} is in the "
                "local cache; connect once to download them."
            )
        configs = sorted(f for f in files if f.endswith(f"/{CONFIG_FILE}"))
        hint = f"; configs in subfolders: {configs} (pass subfolder=...)" if configs else ""
        raise HubConfigError(
            f"{location.name}: no {FRONT_FILE} or {CONFIG_FILE} found; the repo has {sorted(files)}{hint}. "
            "It is not a peft_autoconfig front or a PEFT config repo."
        )

    @classmethod
    def _load_config(cls, location, files: set[str] | None, filename: str, note: str = "") -> PeftConfig:
        if not cls._has(location, files, filename):
            if files is None:
                raise HubConnectionError(
                    f"{location.name}: {filename}{note} is not in the local cache and the Hub cannot be reached."
                )
            available = sorted(f for f in files if f.endswith(CONFIG_FILE))
            raise HubConfigError(f"{location.name}: {filename}{note} not found; configs in the repo: {available}.")
        path = location.fetch(filename)
        cls._fetch_weight_masks(location, files, path, filename)
        return read_config(path, f"{location.name}: {filename}")

    @classmethod
    def _fetch_weight_masks(cls, location, files: set[str] | None, path: Path, filename: str) -> None:
        """Download the mask file a config names relatively (it lands next to the config, where loading resolves
        it); a repo without it keeps the loader's behaviour (a warning when the config is applied)."""
        import json

        try:
            name = relative_weight_masks(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return  # read_config reports the unreadable file
        if name is None or isinstance(location, _LocalFolder):
            return  # a local folder has its files in place
        remote = posixpath.join(posixpath.dirname(filename), name)
        if files is not None and remote not in files:
            return
        try:
            location.fetch(remote)
        except HubConnectionError:
            logger.warning("%s: %s is not in the local cache; the config's masks come from a saved adapter only.",
                           location.name, remote)
