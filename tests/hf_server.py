"""A loopback stand-in for the Hugging Face Hub, speaking what huggingface_hub asks of it.

``with HubServer(page_size=3, token="hf_x") as hub:`` serves on 127.0.0.1:<port 0> from a
background thread (the same pattern as ``origin.Origin``). Endpoints, shaped after
huggingface_hub 2.4's ``HfApi`` and ``hf_raise_for_status``:

- ``GET /api/{models|datasets|spaces}/{ns}/{name}[/revision/{rev}]?expand=…``: repo info
  (``id``, ``sha``, ``private``, ``gated``…; only the ``expand`` fields when given);
- ``GET /api/{type}s/{ns}/{name}/auth-check``: 200, or the error a caller without access gets;
- ``GET /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]?recursive=&expand=&cursor=``: files
  (``{"type": "file", "oid", "size", "path", "lfs": {"oid", "size", "pointerSize"}}``) and
  folders (``{"type": "directory", "oid", "path"}``), ``page_size`` per page, the next page in a
  ``Link: <absolute url>; rel="next"`` header;
- ``GET|HEAD /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}``: the bytes of a plain git
  file; an LFS file is redirected (302) to ``http://localhost:<port>/cdn/{sha256}``, as the Hub
  sends it to its CDN: another origin, which needs no token and refuses one (400).
  ``redirect_lfs=False`` serves LFS bytes directly. No ranges.

Errors carry the headers huggingface_hub reads: a missing repo is 404 with
``X-Error-Code: RepoNotFound``, a private one without the token 401 with the same code, a gated
one 401 ``GatedRepo`` (on auth-check and resolve only: its listing is public, as on the Hub), an
unknown revision 404 ``RevisionNotFound``, a wrong token 401 with ``X-Error-Message: Invalid
credentials in Authorization header``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import threading
from collections.abc import Mapping
from urllib.parse import unquote

from aiohttp import web
from loopback import BackgroundServer

HOST = "127.0.0.1"
# Another name for the same loopback address, so the "CDN" is another origin: clients must not
# carry the Hub token there (httpx drops Authorization on a cross-origin redirect).
CDN_HOST = "localhost"
SHUTDOWN_TIMEOUT = 1.0
API_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"dataset": "datasets/", "space": "spaces/", "model": ""}
LFS_POINTER_SIZE = 134
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


@dataclasses.dataclass(frozen=True)
class HubFile:
    """One file of a commit; ``lfs`` files get an LFS pointer (with their sha256) in the tree."""

    data: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        # What git (and the Hub's tree) calls a blob's id: sha1 over a header and the bytes.
        blob = self.pointer() if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()

    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {len(self.data)}\n"
        ).encode()

    def tree_entry(self, path: str) -> dict:
        entry: dict = {"type": "file", "oid": self.git_oid, "size": len(self.data), "path": path}
        if self.lfs:
            entry["lfs"] = {
                "oid": self.sha256,
                "size": len(self.data),
                "pointerSize": LFS_POINTER_SIZE,
            }
        return entry


@dataclasses.dataclass
class HubRepo:
    """A repo with its commits (sha -> files) and refs (branch or tag -> sha)."""

    repo_type: str
    repo_id: str
    private: bool = False
    gated: bool = False
    commits: dict[str, dict[str, HubFile]] = dataclasses.field(default_factory=dict)
    refs: dict[str, str] = dataclasses.field(default_factory=dict)

    def push(self, files: Mapping[str, bytes | HubFile], branch: str = "main") -> str:
        """Commit `files` (the whole new tree) on `branch`; returns the new commit sha."""
        tree = {
            path: file if isinstance(file, HubFile) else HubFile(file)
            for path, file in files.items()
        }
        parent = self.refs.get(branch, "")
        listing = "".join(f"{path}\0{file.git_oid}\n" for path, file in sorted(tree.items()))
        sha = hashlib.sha1(f"{parent}\n{len(self.commits)}\n{listing}".encode()).hexdigest()
        self.commits[sha] = tree
        self.refs[branch] = sha
        return sha

    @property
    def head(self) -> str:
        return self.refs["main"]

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    status: int


class HubServer(BackgroundServer):
    """The fake Hub on 127.0.0.1:<free port>, served from a background thread."""

    thread_name = "test-hub"

    def __init__(
        self, *, token: str | None = None, page_size: int = 1000, redirect_lfs: bool = True
    ):
        super().__init__()
        self.token = token
        self.page_size = page_size
        self.redirect_lfs = redirect_lfs
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self._seen: list[Seen] = []
        self._seen_lock = threading.Lock()

    # -- setup and inspection, from the test's thread --------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | HubFile],
        *,
        repo_type: str = "dataset",
        private: bool = False,
        gated: bool = False,
    ) -> HubRepo:
        repo = HubRepo(repo_type, repo_id, private=private, gated=gated)
        repo.push(files)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("hub server is not running")
        return f"http://{HOST}:{self.port}"

    def seen(self, contains: str = "") -> list[Seen]:
        with self._seen_lock:
            return [s for s in self._seen if contains in s.path]

    def clear_seen(self) -> None:
        with self._seen_lock:
            self._seen.clear()

    # -- lifecycle --------------------------------------------------------------------------

    async def _serve(self):
        runner = web.ServerRunner(
            web.Server(self._handle, access_log=None), shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner.cleanup

    # -- request handling, on the server's loop ----------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        response = self._respond(request)
        with self._seen_lock:
            self._seen.append(
                Seen(
                    request.method,
                    request.path,
                    dict(request.query),
                    request.headers.get("authorization"),
                    response.status,
                )
            )
        return response

    def _respond(self, request: web.BaseRequest) -> web.Response:
        # Split the raw path: a revision such as refs/pr/1 arrives as one %2F-quoted segment.
        segments = [unquote(part) for part in request.rel_url.raw_path.split("/")[1:]]
        if request.method not in ("GET", "HEAD"):
            return _error(405, "method not allowed")
        if segments[0] == "cdn" and len(segments) == 2:
            return self._blob(request, segments[1])
        if self.token is not None and request.headers.get("authorization") not in (
            None,
            f"Bearer {self.token}",
        ):
            return _error(401, INVALID_CREDENTIALS, message=INVALID_CREDENTIALS)
        if segments[0] == "api" and len(segments) >= 4 and segments[1] in API_KINDS:
            return self._api(request, API_KINDS[segments[1]], segments)
        return self._resolve(request, segments)

    def _authorized(self, request: web.BaseRequest) -> bool:
        return self.token is not None and request.headers.get("authorization") is not None

    def _find(self, request: web.BaseRequest, repo_type: str, repo_id: str):
        """The repo, or the error response the Hub gives for it (missing, private, gated)."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        if repo.private and not self._authorized(request):
            return _error(401, "Repository not found", code="RepoNotFound")
        return repo

    def _api(self, request: web.BaseRequest, repo_type: str, segments: list[str]):
        repo = self._find(request, repo_type, f"{segments[2]}/{segments[3]}")
        if isinstance(repo, web.Response):
            return repo
        rest = segments[4:]
        if not rest:
            return self._info(request, repo, "main")
        if rest[0] == "revision" and len(rest) == 2:
            return self._info(request, repo, rest[1])
        if rest == ["auth-check"]:
            return self._gate(request, repo) or web.json_response({})
        if rest[0] == "tree" and len(rest) >= 2:
            return self._tree(request, repo, rest[1], "/".join(rest[2:]))
        return _error(404, "not found")

    def _gate(self, request: web.BaseRequest, repo: HubRepo) -> web.Response | None:
        if repo.gated and not self._authorized(request):
            return _error(
                401,
                f"Access to {repo.repo_type} {repo.repo_id} is restricted. You must have access"
                " to it and be authenticated to access it. Please log in.",
                code="GatedRepo",
            )
        return None

    def _info(self, request: web.BaseRequest, repo: HubRepo, revision: str) -> web.Response:
        sha = repo.resolve(revision)
        if sha is None:
            return _error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "sha": sha,
            "siblings": [{"rfilename": path} for path in repo.commits[sha]],
        }
        expand = request.query.getall("expand", [])
        if expand:
            info = {key: value for key, value in info.items() if key in {"_id", "id", *expand}}
        return web.json_response(info)

    def _tree(self, request: web.BaseRequest, repo: HubRepo, revision: str, under: str):
        sha = repo.resolve(revision)
        if sha is None:
            return _error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        recursive = request.query.get("recursive", "false").lower() in ("true", "1")
        entries = _tree_entries(repo.commits[sha], under, recursive)
        if under and not entries:
            return _error(404, f"{under} does not exist", code="EntryNotFound")
        start = _decode_cursor(request.query.get("cursor"))
        end = start + self.page_size
        response = web.json_response(entries[start:end])
        if end < len(entries):
            next_url = request.url.update_query(cursor=_encode_cursor(end))
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response

    def _resolve(self, request: web.BaseRequest, segments: list[str]) -> web.Response:
        repo_type = API_KINDS.get(segments[0], "model")
        if repo_type != "model":
            segments = segments[1:]
        if len(segments) < 5 or segments[2] != "resolve":
            return _error(404, "not found")
        repo = self._find(request, repo_type, f"{segments[0]}/{segments[1]}")
        if isinstance(repo, web.Response):
            return repo
        denied = self._gate(request, repo)
        if denied is not None:
            return denied
        sha = repo.resolve(segments[3])
        if sha is None:
            return _error(404, f"Invalid rev id: {segments[3]}", code="RevisionNotFound")
        file = repo.commits[sha].get("/".join(segments[4:]))
        if file is None:
            return _error(404, "Entry not found", code="EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{file.sha256 if file.lfs else file.git_oid}"'}
        if file.lfs and self.redirect_lfs:
            location = f"http://{CDN_HOST}:{self.port}/cdn/{file.sha256}"
            headers |= {"Location": location, "X-Linked-Size": str(len(file.data))}
            return web.Response(status=302, headers=headers)
        return web.Response(body=file.data, headers=headers)

    def _blob(self, request: web.BaseRequest, sha256: str) -> web.Response:
        # A presigned CDN URL refuses a second credential, as S3 does: a leaked token fails loudly.
        if "authorization" in request.headers:
            return _error(400, "Only one auth mechanism allowed")
        for repo in self.repos.values():
            for files in repo.commits.values():
                for file in files.values():
                    if file.lfs and file.sha256 == sha256:
                        return web.Response(body=file.data)
        return _error(404, "no such object")


def _tree_entries(files: Mapping[str, HubFile], under: str, recursive: bool) -> list[dict]:
    """The tree under `under`, folders and files, sorted by path as the Hub lists them."""
    prefix = f"{under.rstrip('/')}/" if under else ""
    folders: set[str] = set()
    entries: list[dict] = []
    for path, file in files.items():
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        depth = len(parts) if recursive else 1
        for level in range(1, min(depth, len(parts) - 1) + 1):
            folders.add(prefix + "/".join(parts[:level]))
        if recursive or len(parts) == 1:
            entries.append(file.tree_entry(path))
    for folder in folders:
        oid = hashlib.sha1(f"tree {folder}".encode()).hexdigest()
        entries.append({"type": "directory", "oid": oid, "path": folder})
    return sorted(entries, key=lambda entry: entry["path"])


def _encode_cursor(offset: int) -> str:
    # Opaque to the client, as the Hub's cursors are: it must follow the Link, not build one.
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("offset:"))


def _error(status: int, error: str, *, code: str | None = None, message: str | None = None):
    headers = {}
    if code is not None:
        headers["X-Error-Code"] = code
    headers["X-Error-Message"] = message or error
    return web.json_response({"error": error}, status=status, headers=headers)
