"""An S3-compatible bucket listing (ListObjectsV2) as a source of file entries.

The listing is streamed page by page so that a bucket of millions of keys is never held
whole in memory. boto3 is imported inside the functions: it costs ~300 ms at import and
most jobs never touch S3.
"""

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from bulkforge.daemon.downloader.manifest import FileEntry, listed_entry
from bulkforge.daemon.downloader.paths import safe_relative_path
from bulkforge.daemon.errors import InvalidArgument, SourceUnavailable

if TYPE_CHECKING:
    from botocore.client import BaseClient


# A presigned URL serves one attempt; it must outlive a long transfer of a large file.
PRESIGNED_FOR_S = 6 * 3600

MAX_PAGE_SIZE = 1000  # the most ListObjectsV2 returns per request, whatever is asked
MAX_REPORTED_KEYS = 10
DEFAULT_REGION = "us-east-1"
# One listing issues one request at a time; a bigger pool would only hold idle sockets.
POOL_CONNECTIONS = 2
# A transient 5xx or reset in the middle of a million-key listing should not fail the submit.
LIST_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60

BUCKET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$")
PLAIN_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
USAGE = "give the bucket as http(s)://HOST[:PORT]/BUCKET/PREFIX (path-style)"

# S3 error codes that mean the operator must change the request, not wait and retry.
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "InvalidBucketName"})
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)
WRONG_REGION_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)


@dataclass(frozen=True)
class S3Location:
    """Where to list: an endpoint, a bucket, and a key prefix ("" or ending in "/")."""

    endpoint: str
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"{self.endpoint}/{self.bucket}/{quote(self.prefix)}"

    def object_url(self, key: str) -> str:
        return f"{self.endpoint}/{self.bucket}/{quote(key)}"


def parse_s3_url(url: str) -> S3Location:
    """Split `http(s)://host[:port]/bucket/prefix` into an S3Location.

    The prefix names a folder: `…/bucket/data/1m` lists the keys under `data/1m/` (not
    `data/1mfoo`), and each file's path is its key relative to that folder, as
    `aws s3 sync` does. Virtual-hosted URLs (`https://bucket.host/…`) are not recognised.
    """
    parts = urlsplit(url.strip())
    if parts.scheme == "s3":
        raise InvalidArgument(f"s3 {url!r}: s3:// names no endpoint; {USAGE}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"s3 {url!r}: not an http(s) URL; {USAGE}")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(
            f"s3 {url!r}: credentials in the URL are refused; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in bfd's environment"
        )
    if parts.query or parts.fragment:
        raise InvalidArgument(f"s3 {url!r}: a query or fragment has no meaning here; {USAGE}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise InvalidArgument(f"s3 {url!r}: the port is not a number in 0-65535") from None
    bucket, _, prefix = parts.path.lstrip("/").partition("/")
    if not bucket:
        raise InvalidArgument(f"s3 {url!r}: no bucket in the path; {USAGE}")
    if not BUCKET_NAME.match(bucket):
        raise InvalidArgument(
            f"s3 {url!r}: {bucket!r} is not a bucket name (3-255 letters, digits, '.', '-', '_')"
        )
    prefix = unquote(prefix)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Location(endpoint=f"{parts.scheme}://{parts.netloc}", bucket=bucket, prefix=prefix)


class S3Listing:
    """The objects under a location, as pages of FileEntry, read lazily.

    A key whose relative path is unsafe (`..`, absolute, NUL, …) refuses the whole listing
    with InvalidArgument naming it: downloading the rest would quietly leave a hole, and
    the operator can step around such a key with an exclude glob. Globs are matched (with
    fnmatch, where `*` also crosses `/`) on the key relative to the prefix, before the key
    is checked, so an excluded key never refuses anything.
    """

    def __init__(
        self,
        location: S3Location,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        page_size: int = MAX_PAGE_SIZE,
    ):
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page size {page_size} is outside 1-{MAX_PAGE_SIZE}")
        self.location = location
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.page_size = page_size

    def pages(self) -> Iterator[list[FileEntry]]:
        """Each non-empty page of entries, requesting the next page only when asked for it.

        Raises InvalidArgument (missing bucket, access denied, unsafe key, nothing listed)
        or SourceUnavailable (endpoint unreachable or failing), never a botocore exception.
        """
        listed = 0
        with _listing_errors(self.location):
            for page in self._raw_pages():
                entries = self._entries(page.get("Contents", ()))
                if entries:
                    listed += len(entries)
                    yield entries
        if listed == 0:
            raise InvalidArgument(
                f"s3: no objects to fetch under {self.location.url}{self._filters()}"
            )

    def _raw_pages(self) -> Iterator[dict[str, Any]]:
        client = make_client(self.location.endpoint)
        paginator = client.get_paginator("list_objects_v2")
        request: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "PaginationConfig": {"PageSize": self.page_size},
        }
        if self.location.prefix:
            request["Prefix"] = self.location.prefix
        try:
            yield from paginator.paginate(**request)
        finally:
            client.close()

    def _entries(self, objects: Sequence[dict[str, Any]]) -> list[FileEntry]:
        entries: list[FileEntry] = []
        refused: list[str] = []
        for obj in objects:
            key = obj["Key"]
            relative = key[len(self.location.prefix) :]
            if key.endswith("/") or not self._selected(relative):
                continue
            try:
                entries.append(self._entry(key, relative, obj))
            except InvalidArgument as exc:
                refused.append(f"key {key!r}: {exc}")
        if refused:
            raise InvalidArgument(
                f"s3: {self.location.url} holds keys that cannot be written safely under "
                "dest, so the listing is refused (exclude them with a glob to fetch the rest): "
                + "; ".join(refused[:MAX_REPORTED_KEYS])
            )
        return entries

    def _selected(self, relative: str) -> bool:
        if self.include and not any(fnmatchcase(relative, glob) for glob in self.include):
            return False
        return not any(fnmatchcase(relative, glob) for glob in self.exclude)

    def _entry(self, key: str, relative: str, obj: dict[str, Any]) -> FileEntry:
        etag = obj.get("ETag", "").strip('"') or None
        return listed_entry(
            url=self.location.object_url(key),
            path=safe_relative_path(relative),
            size=obj.get("Size"),
            etag=etag,
            # A multipart upload's ETag ("<hex>-N") is no digest of the content. Beware that
            # SSE-KMS/SSE-C objects also have 32-hex ETags that are not MD5s.
            md5=etag.lower() if etag and PLAIN_MD5.match(etag) else None,
            sha256=None,
        )

    def _filters(self) -> str:
        words = [f" include {list(self.include)}" if self.include else ""]
        words.append(f" exclude {list(self.exclude)}" if self.exclude else "")
        return " matching" + "".join(words) if any(words) else ""


def make_client(endpoint: str) -> "BaseClient":
    """An S3 client for one listing: signed when boto3 finds credentials, else anonymous."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    # Sessions are not thread-safe; each listing runs in its own worker thread.
    session = boto3.session.Session()
    settings: dict[str, Any] = {
        "region_name": _region(),
        "max_pool_connections": POOL_CONNECTIONS,
        "retries": {"mode": "standard", "total_max_attempts": LIST_ATTEMPTS},
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": READ_TIMEOUT_S,
        "s3": {"addressing_style": "path"},
    }
    if not _has_credentials(session):
        # Public buckets (data.binance.vision) answer unsigned requests; a signed client
        # without credentials would fail with NoCredentialsError before sending anything.
        settings["signature_version"] = UNSIGNED
    return session.client("s3", endpoint_url=endpoint, config=Config(**settings))


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def _has_credentials(session: Any) -> bool:
    from botocore.exceptions import BotoCoreError

    try:
        return session.get_credentials() is not None
    except BotoCoreError as exc:  # e.g. only one of the key id and the secret is set
        raise InvalidArgument(
            f"s3: the AWS credentials in bfd's environment are unusable: {exc}"
        ) from None


@contextmanager
def _listing_errors(location: S3Location) -> Iterator[None]:
    """Turn botocore's exceptions into refusals an operator can act on."""
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as EndpointUnreachable

    try:
        yield
    except ClientError as exc:
        raise listing_refusal(location, exc.response) from None
    except (EndpointUnreachable, HTTPClientError) as exc:
        raise SourceUnavailable(f"s3: cannot reach {location.endpoint}: {exc}") from None
    except BotoCoreError as exc:
        raise InvalidArgument(f"s3: listing {location.url} failed: {exc}") from None


def listing_refusal(location: S3Location, response: dict[str, Any]) -> Exception:
    """The refusal for an S3 error response, chosen by its code and HTTP status."""
    error = response.get("Error", {})
    code = error.get("Code", "")
    said = f"{code}: {error.get('Message', '')}".rstrip(": ")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in MISSING_BUCKET_CODES:
        return InvalidArgument(f"s3: no bucket {location.bucket!r} at {location.endpoint} ({said})")
    if code in DENIED_CODES or status == 403:
        return InvalidArgument(
            f"s3: listing {location.url} was denied ({said}); a private bucket needs "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in bfd's environment"
        )
    if code in WRONG_REGION_CODES or status == 301:
        return InvalidArgument(
            f"s3: {location.url} answered that the bucket lives elsewhere ({said}); "
            "check the endpoint, or set AWS_REGION in bfd's environment"
        )
    if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
        return SourceUnavailable(
            f"s3: listing {location.url} failed at the server ({said}); try again later"
        )
    return InvalidArgument(f"s3: listing {location.url} failed ({said or f'HTTP {status}'})")


def presigner(location: S3Location) -> Callable[[str], str] | None:
    """Presign GETs of this bucket's objects when bfd has credentials; None when anonymous.

    Objects of a private bucket need signed GETs like its listing; a presigned URL
    carries the signature in its query, so Range and If-Range work unchanged.
    """
    import boto3

    if not _has_credentials(boto3.session.Session()):
        return None
    client = make_client(location.endpoint)
    prefix = f"{location.endpoint}/{location.bucket}/"

    def presign(url: str) -> str:
        if not url.startswith(prefix):
            return url
        key = unquote(url.removeprefix(prefix))
        return client.generate_presigned_url(
            "get_object",
            Params={"Bucket": location.bucket, "Key": key},
            ExpiresIn=PRESIGNED_FOR_S,
        )

    return presign
