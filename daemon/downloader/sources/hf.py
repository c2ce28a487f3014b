"""A Hugging Face Hub repo (model, dataset or space) as a source of file entries.

The Hub calls go through huggingface_hub so that the endpoint, the token, the tree pagination
(`Link: <…>; rel="next"`) and the Hub's error codes are handled exactly as the `hf` tools do.
Everything here is synchronous: the daemon runs it in a worker thread.
"""

import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from urllib.parse import quote

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import (
    filter_repo_objects,
    get_token_to_send,
    set_client_factory,
    validate_repo_id,
)

# Not re-exported by huggingface_hub.utils; we wrap it rather than copy what it sets up.
from huggingface_hub.utils._http import default_client_factory

from bulkforge.daemon.downloader.manifest import FileEntry, listed_entry
from bulkforge.daemon.downloader.paths import safe_relative_path
from bulkforge.daemon.errors import InvalidArgument, Refused, SourceUnavailable

# huggingface_hub.constants reads HF_ENDPOINT once, at import; we read it per repo instead, so
# the default is repeated here.
DEFAULT_ENDPOINT = "https://huggingface.co"
PAGE_SIZE = 1000
API_TIMEOUT_S = 60.0
# huggingface_hub lists trees and checks access with timeout=None, i.e. no limit at all; a hub
# that stops answering would hold the worker thread (and the daemon's shutdown) forever.
FALLBACK_TIMEOUT = {"connect": 10.0, "read": API_TIMEOUT_S, "write": API_TIMEOUT_S, "pool": 60.0}
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
REF_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
REF_FORMS = "ORG/NAME, models/ORG/NAME, datasets/ORG/NAME or spaces/ORG/NAME, optionally @REVISION"


@dataclass(frozen=True)
class HFRef:
    """A repo on the Hub and, when given, the branch, tag or commit to take it at."""

    repo_type: str
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        suffix = f"@{self.revision}" if self.revision else ""
        return f"{prefix}{self.repo_id}{suffix}"


def parse_hf_ref(raw: str) -> HFRef:
    """`datasets/ORG/NAME@REV`, `ORG/NAME` (a model, as huggingface_hub reads it), … as an HFRef."""
    text = raw.strip()
    if not text:
        raise InvalidArgument(f"empty Hugging Face repo; give {REF_FORMS}")
    if "://" in text:
        raise InvalidArgument(f"{raw!r} is a URL; give the repo instead: {REF_FORMS}")
    name, at, revision = text.partition("@")
    if at and not _valid_revision(revision):
        raise InvalidArgument(
            f"{raw!r}: after '@' give a branch, tag or commit sha without spaces, e.g. @main"
        )
    repo_type, repo_id = _split_type(raw, name.rstrip("/"))
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InvalidArgument(f"{raw!r}: {exc}") from None
    return HFRef(repo_type, repo_id, revision or None)


def _valid_revision(revision: str) -> bool:
    return bool(revision) and not any(char.isspace() or ord(char) < 32 for char in revision)


def _split_type(raw: str, name: str) -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) == 3 and parts[0] in REF_TYPES:
        return REF_TYPES[parts[0]], f"{parts[1]}/{parts[2]}"
    if len(parts) == 3:
        raise InvalidArgument(
            f"{raw!r}: unknown repo type {parts[0]!r}; use models/, datasets/ or spaces/"
        )
    # "datasets/squad" would otherwise be read as a model of an org named "datasets".
    if len(parts) == 2 and parts[0] in REF_TYPES:
        raise InvalidArgument(f"{raw!r}: give the full id, {parts[0]}/ORG/{parts[1]}")
    if len(parts) != 2 or not all(parts):
        raise InvalidArgument(f"{raw!r}: expected {REF_FORMS}")
    return "model", name


class HFRepo:
    """One repo at one endpoint: its commit sha, its files, the headers its downloads need.

    `endpoint` defaults to HF_ENDPOINT (else https://huggingface.co) and `token` to the one
    huggingface_hub would send (HF_TOKEN, then the saved login), both read when this is built.
    `include`/`exclude` are fnmatch globs on the repo path, with huggingface_hub's meaning
    (`*` crosses `/`; `dir/` means everything under dir).
    """

    def __init__(
        self,
        ref: HFRef,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        endpoint: str | None = None,
        token: str | None = None,
    ):
        self.ref = ref
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.endpoint = _endpoint(endpoint)
        self.token = token or get_token_to_send(None)
        _bound_hub_timeouts()
        # token=False: never let the library fall back to a token we did not choose here.
        self._api = HfApi(endpoint=self.endpoint, token=self.token or False)
        prefix = constants.REPO_TYPES_URL_PREFIXES.get(ref.repo_type, "")
        self._resolve_base = f"{self.endpoint}/{prefix}{ref.repo_id}/resolve"

    @property
    def revision(self) -> str:
        return self.ref.revision or constants.DEFAULT_REVISION

    def pin(self) -> str:
        """The commit sha the revision points at now; every later listing uses it."""
        with self._hub_errors():
            info = self._api.repo_info(
                self.ref.repo_id,
                repo_type=self.ref.repo_type,
                revision=self.revision,
                expand=self._info_fields(),
                timeout=API_TIMEOUT_S,
            )
            # Listing a gated repo works without access, and only its downloads would fail;
            # find out now, at submit time, rather than on every file.
            if getattr(info, "gated", False):
                self._api.auth_check(self.ref.repo_id, repo_type=self.ref.repo_type)
        sha = (getattr(info, "sha", None) or "").lower()
        if not COMMIT_SHA.fullmatch(sha):
            raise SourceUnavailable(
                f"{self.endpoint} gave no commit sha for {self.ref} (got {sha!r})"
            )
        return sha

    def pages(self, sha: str, page_size: int = PAGE_SIZE) -> Iterator[list[FileEntry]]:
        """The files at commit `sha`, filtered, `page_size` at a time, listed as they are read."""
        files = filter_repo_objects(
            self._files(sha),
            allow_patterns=list(self.include) or None,
            ignore_patterns=list(self.exclude) or None,
            key=lambda file: file.path,
        )
        entries = (self._entry(file, sha) for file in files)
        while page := list(islice(entries, page_size)):
            yield page

    def auth_headers(self) -> dict[str, str]:
        """Headers for this endpoint's resolve URLs; never send them to another host."""
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def _info_fields(self) -> list[str]:
        # Without `expand` the Hub also returns every file of the repo; spaces cannot be gated.
        return ["sha"] if self.ref.repo_type == "space" else ["sha", "gated"]

    def _files(self, sha: str) -> Iterator[RepoFile]:
        tree = iter(
            self._api.list_repo_tree(
                self.ref.repo_id,
                repo_type=self.ref.repo_type,
                revision=sha,
                recursive=True,
                expand=False,
            )
        )
        while True:
            # Each next() may fetch the next page of the listing, and fail like any Hub call.
            with self._hub_errors():
                item = next(tree, None)
            if item is None:
                return
            if isinstance(item, RepoFile):
                yield item

    def _entry(self, file: RepoFile, sha: str) -> FileEntry:
        try:
            path = safe_relative_path(file.path)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{self.ref} lists a file bfd refuses to write: {exc}") from None
        # Only LFS files have a content sha256 in the tree. A plain git file's oid is the sha1 of
        # its git blob ("blob <size>\0" + bytes), not a checksum of the bytes alone, so those are
        # verified by size.
        sha256 = file.lfs.sha256.lower() if file.lfs is not None else None
        return listed_entry(
            url=f"{self._resolve_base}/{sha}/{quote(file.path)}",
            path=path,
            size=file.size,
            sha256=sha256,
            md5=None,
            etag=None,
        )

    @contextmanager
    def _hub_errors(self) -> Iterator[None]:
        """Turn what huggingface_hub raises into a refusal the operator can act on."""
        try:
            yield
        except Exception as exc:
            refusal = self._refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc

    def _refusal(self, exc: Exception) -> Refused | None:
        where = f"{self.ref} at {self.endpoint}"
        if isinstance(exc, GatedRepoError):
            return InvalidArgument(f"{where} is gated: {self._gated_advice()}")
        if isinstance(exc, RepositoryNotFoundError):
            return InvalidArgument(f"{where}: no such repo; {self._private_advice()}")
        if isinstance(exc, RevisionNotFoundError):
            return InvalidArgument(
                f"{where}: no revision {self.revision!r}; give a branch, tag or full commit sha"
            )
        if isinstance(exc, HfHubHTTPError):
            return _http_refusal(where, exc, self.token is not None)
        if isinstance(exc, OfflineModeIsEnabled):
            return SourceUnavailable(f"{where}: HF_HUB_OFFLINE is set in bfd's environment")
        if isinstance(exc, httpx2.TransportError):
            return SourceUnavailable(f"cannot reach {self.endpoint} for {self.ref}: {exc!r}")
        if isinstance(exc, ValueError | KeyError | TypeError):
            # JSON that does not parse, or lacks what a hub answers with (json's errors
            # are ValueErrors): the endpoint is not a Hugging Face hub, or is broken.
            return SourceUnavailable(
                f"{where} did not answer as a Hugging Face hub does ({type(exc).__name__}: "
                f"{str(exc)[:120]}); check the endpoint"
            )
        return None

    def _gated_advice(self) -> str:
        if self.token:
            return (
                "the account of the token in HF_TOKEN has not been granted access; accept the "
                "repo's conditions on its page with that account"
            )
        return "accept its conditions on its page, then give bfd that account's token in HF_TOKEN"

    def _private_advice(self) -> str:
        if self.token:
            return "check the name and type, or whether the token in HF_TOKEN may read it"
        return "check the name and type; if it is private, give bfd a token in HF_TOKEN"


def _http_refusal(where: str, exc: HfHubHTTPError, has_token: bool) -> Refused:
    status = exc.response.status_code if exc.response is not None else 0
    detail = exc.server_message or f"HTTP {status}"
    if status == 401:
        told = "rejected the token in HF_TOKEN" if has_token else "wants a token in HF_TOKEN"
        return InvalidArgument(f"{where}: the hub {told} ({detail})")
    if status == 403:
        lacks = "the token in HF_TOKEN lacks read access" if has_token else "set HF_TOKEN"
        return InvalidArgument(f"{where}: forbidden, {lacks} ({detail})")
    if status == 429 or status >= 500:
        return SourceUnavailable(f"{where}: the hub answered {status}, try again later ({detail})")
    return InvalidArgument(f"{where}: the hub answered {status} ({detail})")


def _endpoint(explicit: str | None) -> str:
    endpoint = (explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise InvalidArgument(f"Hugging Face endpoint {endpoint!r} must be an http(s):// URL")
    return endpoint


_timeouts_lock = threading.Lock()
_timeouts_bounded = False


def _bound_hub_timeouts() -> None:
    """Make huggingface_hub's shared client give up on a silent hub (once per process)."""
    global _timeouts_bounded
    with _timeouts_lock:
        if not _timeouts_bounded:
            set_client_factory(_client_with_fallback_timeout)
            _timeouts_bounded = True


def _client_with_fallback_timeout() -> httpx2.Client:
    client = default_client_factory()
    client.event_hooks["request"].append(_fallback_timeout)
    return client


def _fallback_timeout(request: httpx2.Request) -> None:
    # Only fills in the no-limit case; a timeout the library chose is left as it is.
    timeout = request.extensions.get("timeout") or {}
    if all(value is None for value in timeout.values()):
        request.extensions["timeout"] = dict(FALLBACK_TIMEOUT)
