"""Push a search output (the whole front) or one PEFT config folder to the Hub, with a model card, in one commit.

Everything is checked and rendered locally first (configs validated, card built), so a bad folder fails before any
network call. The upload is a single `HfApi.create_commit` with every file (not `upload_folder`, which may split
large folders into several commits). `dry_run` writes exactly the files of that commit to a local folder instead.

Nothing local is published: front.json is written again from `Front.public()` (no `model_path`), and every
absolute path in it, in the configs and hence in the card (a local model folder, the recipe's task folder) is
replaced by `<local>/<its last part>`; a last check refuses any file still holding the source folder's path. A
point's unstructured mask file travels in its folder (`weight_masks.safetensors`, named relatively, as `Front.save`
writes it); a config that still names its masks by absolute local path (an older output) has that file uploaded
next to it under the same name, and its `weight_masks` rewritten to it. A repo
that the push created is deleted again when the commit fails, so a failed push leaves no empty repo behind.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..front import CONFIG_FILE, FRONT_FILE, MASK_FILE, Front
from .card import build_model_card
from .errors import HubAuthError, HubConfigError, HubConnectionError, HubError, HubNotFoundError
from .source import PushSource, read_source

CARD_FILE = "README.md"
LOCAL_PREFIX = "<local>"
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


@dataclass
class PushResult:
    """What a push did: the files (paths in the repo) and, unless a dry run, the commit."""

    repo_id: str
    files: list[str]
    commit_url: str | None = None
    commit_oid: str | None = None
    dry_run_dir: str | None = None


def strip_local_paths(value: Any) -> Any:
    """`value` (JSON-like) with every absolute path string replaced by `<local>/<last part>`."""
    if isinstance(value, dict):
        return {key: strip_local_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strip_local_paths(item) for item in value]
    if isinstance(value, str) and _ABSOLUTE.match(value):
        name = re.split(r"[\\/]", value.rstrip("/\\"))[-1]
        return f"{LOCAL_PREFIX}/{name}" if name and name != "~" else LOCAL_PREFIX
    return value


def _publishable(source: PushSource) -> PushSource:
    """The source as it is published: local-only fields dropped, local paths stripped from front and configs."""
    if source.front is not None:
        source.front = Front.from_dict(strip_local_paths(source.front.public().to_dict()), FRONT_FILE)
        if source.point is not None:
            source.point = source.front.point(source.point.name)
    for config in source.configs.values():
        config.base_model_name_or_path = strip_local_paths(config.base_model_name_or_path)
    return source


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def _check_no_local_path(upload: dict[str, bytes], root: Path) -> None:
    """Refuse to publish a text file that still holds the source folder's absolute path (the last line of defence)."""
    needle = str(root.resolve()).encode()
    for path_in_repo, content in upload.items():
        if path_in_repo.endswith((".json", ".md")) and needle in content:
            raise HubConfigError(f"{path_in_repo}: holds the local path {root.resolve()}; not published.")


def _carry_local_masks(config: dict[str, Any], path_in_repo: str, upload: dict[str, bytes]) -> dict[str, Any]:
    """`config` naming its mask file by an absolute local path that exists: add the file to `upload` next to the
    config as `MASK_FILE` and return the config naming it so (else `config` unchanged: a missing file is then
    stripped to `<local>/<name>`, and the masks come only from a saved adapter)."""
    value = config.get("weight_masks")
    if not isinstance(value, str) or not value or not Path(value).expanduser().is_absolute():
        return config
    path = Path(value).expanduser()
    if not path.is_file():
        return config
    upload[posixpath.join(posixpath.dirname(path_in_repo), MASK_FILE)] = path.read_bytes()
    return {**config, "weight_masks": MASK_FILE}


def collect_upload(directory: str | os.PathLike, repo_id: str, base_model: str | None = None,
                   dataset: str | None = None, license: str | None = None) -> dict[str, bytes]:
    """Path in repo -> content for everything a push of `directory` uploads, the rendered README.md first."""
    source = _publishable(read_source(directory))
    card = build_model_card(source, repo_id, base_model=base_model, dataset=dataset, license=license)
    upload = {CARD_FILE: str(card).encode("utf-8")}
    carried: set[str] = set()  # folders (in the repo) whose config now names a carried mask file
    for path_in_repo, local in sorted(source.files.items()):
        if path_in_repo in upload:
            continue  # a mask file already carried from its config's absolute path
        upload[path_in_repo] = local.read_bytes()
        if path_in_repo == CONFIG_FILE or path_in_repo.endswith(f"/{CONFIG_FILE}"):
            config = json.loads(upload[path_in_repo])
            published = strip_local_paths(_carry_local_masks(config, path_in_repo, upload))
            if published != config:  # rewritten only when it held a local path
                upload[path_in_repo] = _json_bytes(published)
            if published.get("weight_masks") == MASK_FILE and config.get("weight_masks") != MASK_FILE:
                carried.add(posixpath.dirname(path_in_repo))
    if source.kind == "front" and source.front is not None:
        for point in source.front.points:  # the inline config says what the point's folder says
            if point.config_path in carried and point.config is not None:
                point.config = {**point.config, "weight_masks": MASK_FILE}
        upload[FRONT_FILE] = _json_bytes(source.front.to_dict())
    _check_no_local_path(upload, source.root)
    return upload


def write_dry_run(upload: dict[str, bytes], target: str | os.PathLike) -> Path:
    """Write `upload` under `target` atomically: a temporary sibling folder renamed at the end, removed on failure."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"`dry_run` folder {target} exists and is not empty; choose a new path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for path_in_repo, content in upload.items():
            destination = staging / path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(content)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _token_hint(token: str | None) -> str:
    from huggingface_hub import get_token

    if token is None and get_token() is None:
        return "no token found: pass `token=`/--token, set HF_TOKEN or run `hf auth login`"
    return "check that the token is valid and has write access to this namespace"


@contextmanager
def hub_errors(repo_id: str, endpoint: str, token: str | None, action: str) -> Iterator[None]:
    """Turn huggingface_hub/httpx errors into `HubError`s that name the repo, the endpoint and what to do."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except HubError:
        raise
    except OfflineModeIsEnabled:
        raise HubConnectionError(f"{repo_id}: cannot {action}: HF_HUB_OFFLINE=1 is set.") from None
    except (httpx2.TransportError, ConnectionError) as error:
        raise HubConnectionError(
            f"{repo_id}: cannot {action}: the Hub at {endpoint} is unreachable ({type(error).__name__}: {error}). "
            "Check the network, or HF_ENDPOINT."
        ) from None
    except RevisionNotFoundError:
        raise HubNotFoundError(f"{repo_id}: cannot {action}: the revision does not exist at {endpoint}.") from None
    except RemoteEntryNotFoundError as error:
        raise HubNotFoundError(f"{repo_id}: cannot {action}: file not found at {endpoint} ({error.response.url}).") from None
    except RepositoryNotFoundError:
        raise HubNotFoundError(
            f"{repo_id}: cannot {action}: repository not found at {endpoint} (or private and the token cannot read "
            f"it; {_token_hint(token)})."
        ) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        detail = error.server_message or str(error).splitlines()[0]
        if status in (401, 403):
            raise HubAuthError(
                f"{repo_id}: cannot {action}: the Hub at {endpoint} answered {status} ({detail}); {_token_hint(token)}."
            ) from None
        raise HubError(f"{repo_id}: cannot {action}: the Hub at {endpoint} answered {status} ({detail}).") from None


def push_to_hub(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    dry_run: str | os.PathLike | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    dataset: str | None = None,
    license: str | None = None,
    endpoint: str | None = None,
) -> PushResult:
    """Upload a search output folder or a PEFT config folder to `repo_id` as one commit, with a model card.

    Args:
        directory: a search output (front.json, front/<name>/, pareto.png) or a folder with adapter_config.json
            (a `prune-model` output is pushed with `hub.pruned.push_pruned_model`; the CLI picks it).
        repo_id: "org/name"; created if missing (`private` applies only then).
        revision: branch to commit to (created from main if missing); default main.
        token: Hub token; default huggingface_hub's resolution (HF_TOKEN, then the saved login).
        dry_run: write the exact files of the commit to this new folder instead of uploading.
        base_model, dataset, license: override the card metadata (a local model path is never used as base_model).
        endpoint: Hub URL; default HF_ENDPOINT or https://huggingface.co.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"`repo_id` must look like 'org/name', got {repo_id!r}.")
    upload = collect_upload(directory, repo_id, base_model=base_model, dataset=dataset, license=license)
    if dry_run is not None:
        written = write_dry_run(upload, dry_run)
        return PushResult(repo_id=repo_id, files=list(upload), dry_run_dir=str(written))

    n_configs = sum(1 for path in upload if path.endswith(CONFIG_FILE))
    message = commit_message or f"Upload {n_configs} searched PEFT config(s) with peft_autoconfig"
    return commit_upload(upload, repo_id, message, private=private, revision=revision, token=token, endpoint=endpoint)


def commit_upload(upload: dict[str, bytes], repo_id: str, message: str, *, private: bool = False,
                  revision: str | None = None, token: str | None = None, endpoint: str | None = None) -> PushResult:
    """Upload `upload` (path in repo -> content) to `repo_id` as one commit; the repo is created if missing (and
    deleted again if that first commit fails), the branch `revision` too."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content) for path, content in upload.items()]
    with hub_errors(repo_id, api.endpoint, token, "push"):
        created = not api.repo_exists(repo_id)
        if created:
            api.create_repo(repo_id, private=True if private else None, exist_ok=True)  # None: the namespace default
        try:
            if revision not in (None, "main"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision)
        except BaseException:
            if created:  # a failed first push leaves no empty repo behind; the commit's error is the one reported
                with suppress(Exception):
                    api.delete_repo(repo_id, missing_ok=True)
            raise
    return PushResult(repo_id=repo_id, files=list(upload), commit_url=info.commit_url, commit_oid=info.oid)
