"""A small, in-memory stand-in for the Hugging Face Hub, for tests of the push and download paths.

There is no official local Hub, so this server speaks the subset of the Hub HTTP API that the *real*
`huggingface_hub` client uses for `HfApi.create_repo`, `create_branch`, `create_commit` (preupload + NDJSON commit),
`list_repo_commits`, `repo_info`, `repo_exists`, `delete_repo`, `list_repo_tree`, `hf_hub_download` and
`snapshot_download`. Small files are "regular" uploads (base64 inside the commit); files matching the repo's
.gitattributes LFS patterns (`*.safetensors`) or at least `lfs_threshold` bytes get `uploadMode: "lfs"` from
preupload and go through the Git LFS batch API as the client speaks it (`POST /{repo}.git/info/lfs/objects/batch`,
then `PUT` to the returned `upload.href`, then `POST` to `verify.href`); the commit names them as `lfsFile` by
sha256. Xet is not spoken: tests that upload LFS files set `HF_HUB_DISABLE_XET`. `fail_commits` makes the next
commits fail (422), to test clean-up after a failed push.

Errors mimic the Hub so the client raises its usual exceptions: an invalid token gets 401 with
`X-Error-Message: Invalid credentials in Authorization header`; a missing or private repo read without a valid
token gets 401 `RepoNotFound`; a missing file 404 `EntryNotFound`; a missing revision 404 `RevisionNotFound`.

Safety: binds 127.0.0.1 only, caps request count and body size, and shuts itself down after `max_seconds`.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
LFS_PATTERNS = ("*.safetensors",)


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    title: str
    message: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, list[Commit]] = field(default_factory=dict)  # newest last

    def head(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.branches[revision][-1]
        for commits in self.branches.values():  # a commit hash
            for commit in commits:
                if commit.oid == revision:
                    return commit
        return None


class LocalHub:
    """Context manager running the fake Hub in a daemon thread; `endpoint` is its base URL.

    `token` is the only token accepted for writes and private reads. Stops by itself after `max_seconds`
    or `max_requests`, whichever comes first.
    """

    def __init__(self, token: str = "hf_test_token", max_seconds: float = 300.0, max_requests: int = 2000,
                 max_body_bytes: int = 16 * 2**20, user: str = "tester", lfs_threshold: int = 10 * 2**20) -> None:
        self.token = token
        self.user = user
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.lfs_threshold = lfs_threshold
        self.fail_commits = 0  # the next N commits answer 422
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, as uploaded through the LFS batch API
        self.requests: list[tuple[str, str]] = []  # (method, path) log for assertions
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- state helpers used by tests -------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], private: bool = False, title: str = "seed") -> Repo:
        """Create a repo directly (no HTTP), e.g. a repo holding a malformed config."""
        repo = Repo(repo_id, private)
        repo.branches["main"] = [_commit("initial commit", "", {".gitattributes": GITATTRIBUTES})]
        repo.branches["main"].append(_commit(title, "", {".gitattributes": GITATTRIBUTES, **files}))
        self.repos[repo_id] = repo
        return repo


def _commit(title: str, message: str, files: dict[str, bytes]) -> Commit:
    return Commit(uuid.uuid4().hex + uuid.uuid4().hex[:8], title, message, dict(files),
                  datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"))


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass

    # -- plumbing --------------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        hub = self.hub
        try:
            with hub._lock:
                hub.requests.append((method, self.path))
                if len(hub.requests) > hub.max_requests:
                    raise _HttpError(503, "request budget of the test server exhausted")
            body = self._read_body()
            url = urlsplit(self.path)
            with hub._lock:
                status, headers, payload = self._route(method, unquote(url.path), parse_qs(url.query), body)
        except _HttpError as error:
            status, payload = error.status, json.dumps({"error": error.message, **error.extra}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
        except Exception as error:  # a bug in the fake server: report it, never hang the client
            status, payload = 500, json.dumps({"error": f"{type(error).__name__}: {error}"}).encode()
            headers = {"Content-Type": "application/json"}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        """The request body, sent with a Content-Length or chunked (as httpx streams a file for an LFS PUT)."""
        limit = self.hub.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > limit:
                    raise _HttpError(413, f"body over the test server's limit of {limit} bytes")
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise _HttpError(413, f"body of {length} bytes over the test server's limit")
        return self.rfile.read(length) if length else b""

    # -- auth ------------------------------------------------------------------------------------------------
    def _auth(self) -> bool:
        """True for the valid token, False for no token; 401 for a wrong one (as the Hub does)."""
        header = self.headers.get("Authorization")
        if not header:
            return False
        if header != f"Bearer {self.hub.token}":
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return True

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        authed = self._auth()
        if write and not authed:
            raise _HttpError(401, "You must be authenticated to access this resource")
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not authed):
            raise _HttpError(401 if not authed else 404, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _head(repo: Repo, revision: str) -> Commit:
        commit = repo.head(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # -- routes ----------------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict, body: bytes):
        json_reply = lambda obj, status=200: (status, {"Content-Type": "application/json"}, json.dumps(obj).encode())  # noqa: E731
        parts = path.strip("/").split("/")

        if method == "POST" and path == "/api/repos/create":
            if not self._auth():
                raise _HttpError(401, "You must be authenticated to access this resource")
            data = json.loads(body)
            if data.get("type", "model") != "model":
                raise _HttpError(400, "the test server only hosts model repos")
            repo_id = f"{data.get('organization') or self.hub.user}/{data['name']}"
            url = f"{self.hub.endpoint}/{repo_id}"
            if repo_id in self.hub.repos:
                raise _HttpError(409, "You already created this model repo", extra={"url": url})
            repo = Repo(repo_id, data.get("visibility") == "private" or bool(data.get("private")))
            repo.branches["main"] = [_commit("initial commit", "", {".gitattributes": GITATTRIBUTES})]
            self.hub.repos[repo_id] = repo
            return json_reply({"url": url, "name": repo_id, "id": uuid.uuid4().hex})

        if method == "DELETE" and path == "/api/repos/delete":
            if not self._auth():
                raise _HttpError(401, "You must be authenticated to access this resource")
            data = json.loads(body)
            repo_id = f"{data.get('organization') or self.hub.user}/{data['name']}"
            if self.hub.repos.pop(repo_id, None) is None:
                raise _HttpError(404, "Repository not found", "RepoNotFound")
            return json_reply({})

        if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            return json_reply(self._lfs_batch(path[1:-len(".git/info/lfs/objects/batch")], json.loads(body)))
        if parts[0] == "lfs-upload" and method == "PUT" and len(parts) == 4:  # a pre-signed URL: no token sent
            if hashlib.sha256(body).hexdigest() != parts[3]:
                raise _HttpError(400, "LFS upload: content does not match its sha256")
            self.hub.lfs_objects[parts[3]] = body
            return json_reply({})
        if parts[0] == "lfs-verify" and method == "POST":
            data = json.loads(body)
            if len(self.hub.lfs_objects.get(data["oid"], b"")) != data["size"] or data["oid"] not in self.hub.lfs_objects:
                raise _HttpError(404, f"LFS object {data['oid']} not found")
            return json_reply({})

        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body).get("content", ""))

        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            action, rest = (parts[4] if len(parts) > 4 else None), parts[5:]
            if action is None and method == "GET":
                return json_reply(self._info(self._repo(repo_id), "main"))
            if action == "revision" and method == "GET":
                return json_reply(self._info(self._repo(repo_id), "/".join(rest)))
            if action == "branch" and method == "POST":
                repo, branch = self._repo(repo_id, write=True), "/".join(rest)
                if branch in repo.branches:
                    raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
                start = json.loads(body or b"{}").get("startingPoint", "main")
                repo.branches[branch] = [self._head(repo, start)]
                return json_reply({})
            if action == "preupload" and method == "POST":
                self._head(self._repo(repo_id, write=True), "/".join(rest))
                files = json.loads(body)["files"]
                return json_reply({"files": [{"path": f["path"], "uploadMode": self._upload_mode(f), "shouldIgnore": False,
                                              "oid": None} for f in files], "commitOid": None})
            if action == "commit" and method == "POST":
                return json_reply(self._commit(self._repo(repo_id, write=True), "/".join(rest), body))
            if action == "commits" and method == "GET":
                repo = self._repo(repo_id)
                revision = "/".join(rest)
                self._head(repo, revision)
                commits = repo.branches.get(revision) or []
                return json_reply([{"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                                    "authors": [{"user": self.hub.user}]} for c in reversed(commits)])
            if action == "tree" and method == "GET":
                repo = self._repo(repo_id)
                commit = self._head(repo, rest[0] if rest else "main")
                prefix = "/".join(rest[1:])
                return json_reply(self._tree(commit, prefix, query.get("recursive", ["False"])[0].lower() == "true"))

        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._repo("/".join(parts[:2]))
            commit = self._head(repo, parts[3])
            filename = "/".join(parts[4:])
            if filename not in commit.files:
                raise _HttpError(404, f"Entry not found: {filename}", "EntryNotFound")
            content = commit.files[filename]
            headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit.oid,
                       "ETag": f'"{git_blob_oid(content)}"'}
            return 200, headers, content

        raise _HttpError(404, f"the test server does not implement {method} {path}")

    def _upload_mode(self, file: dict) -> str:
        lfs = any(fnmatch.fnmatch(file["path"].rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)
        return "lfs" if lfs or file.get("size", 0) >= self.hub.lfs_threshold else "regular"

    def _lfs_batch(self, repo_id: str, request: dict) -> dict:
        """The Git LFS batch API: an upload (and verify) action per object the server does not hold yet."""
        self._repo(repo_id, write=True)
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            raise _HttpError(400, "the test server only accepts basic LFS uploads")
        objects = []
        for obj in request["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs-upload/{repo_id}/{obj['oid']}"},
                    "verify": {"href": f"{self.hub.endpoint}/lfs-verify/{repo_id}"},
                }
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    @staticmethod
    def _validate_yaml(content: str):
        """Like the Hub: the README front matter must be a YAML mapping; a model-index must parse."""
        import yaml
        from huggingface_hub.repocard_data import model_index_to_eval_results

        reply = lambda obj, status=200: (status, {"Content-Type": "application/json"}, json.dumps(obj).encode())  # noqa: E731
        if not content.startswith("---"):
            return reply({"warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
        try:
            metadata = yaml.safe_load(content.split("---", 2)[1]) or {}
            if not isinstance(metadata, dict):
                raise ValueError("metadata is not a mapping")
            if "model-index" in metadata:
                model_index_to_eval_results(metadata["model-index"])
        except Exception as error:
            return reply({"errors": [{"message": f"{type(error).__name__}: {error}"}]}, 400)
        return reply({"warnings": []})

    def _info(self, repo: Repo, revision: str) -> dict:
        commit = self._head(repo, revision)
        return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.oid, "private": repo.private,
                "lastModified": commit.date, "tags": [], "siblings": [{"rfilename": name} for name in sorted(commit.files)]}

    @staticmethod
    def _tree(commit: Commit, prefix: str, recursive: bool) -> list[dict]:
        base = f"{prefix}/" if prefix else ""
        entries: dict[str, dict] = {}
        for name, content in sorted(commit.files.items()):
            if not name.startswith(base):
                continue
            tail = name[len(base):].split("/")
            for depth in range(1, len(tail)):  # folders on the way
                folder = base + "/".join(tail[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": git_blob_oid(folder.encode())})
                if not recursive:
                    break
            if len(tail) == 1 or recursive:
                entries[name] = {"type": "file", "path": name, "size": len(content), "oid": git_blob_oid(content)}
        return list(entries.values())

    def _commit(self, repo: Repo, revision: str, body: bytes) -> dict:
        if revision not in repo.branches:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if self.hub.fail_commits > 0:
            self.hub.fail_commits -= 1
            raise _HttpError(422, "commit refused by the test server (fail_commits)")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = repo.branches[revision][-1]
        if header.get("parentCommit") not in (None, parent.oid):
            raise _HttpError(412, "parentCommit is not the head of the branch")
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HttpError(400, "only base64 file content is supported")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                content = self.hub.lfs_objects.get(value.get("oid"))
                if content is None or len(content) != value.get("size"):
                    raise _HttpError(400, f"lfsFile {value.get('path')}: object {value.get('oid')} was never uploaded")
                files[value["path"]] = content
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {k: v for k, v in files.items() if not k.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise _HttpError(400, f"the test server does not support commit operation {key!r}")
        commit = _commit(header.get("summary", ""), header.get("description", ""), files)
        repo.branches[revision].append(commit)
        return {"commitUrl": f"{self.hub.endpoint}/{repo.repo_id}/commit/{commit.oid}", "commitOid": commit.oid,
                "pullRequestUrl": None, "success": True}
