"""The data.binance.vision layout: each `X.zip` is published beside `X.zip.CHECKSUM`.

The sidecar holds the zip's sha256 in `sha256sum` format; it is the strongest checksum the
source offers (the S3 ETag of a multipart upload is no digest at all), so the downloader
verifies the zip against it, and keeps the sidecar too: the listing pairs each zip with its
sidecar's URL, and a transfer fetches the sidecar's digest before the zip.
"""

import dataclasses
import re
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath

from bulkforge.daemon.downloader.access import Access
from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.transfer.engine import Engine
from bulkforge.daemon.transfer.failed import fail

CHECKSUM_SUFFIX = ".CHECKSUM"
# "<hex>  name" (text mode) or "<hex> *name" (binary mode); a single space is tolerated.
CHECKSUM_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *]?(?P<name>.+)$")
# A sidecar is one line; anything longer is not one.
SIDECAR_MAX = 64 * 1024


def pair_checksums(entries: Iterable[FileEntry]) -> Iterator[FileEntry]:
    """Every entry, in order; a file listed right before its `.CHECKSUM` gets its checksum_url.

    S3 lists keys in byte order, so `X.zip.CHECKSUM` directly follows `X.zip` (a page may
    end between them): holding back one entry is enough, and the stream stays a stream.
    """
    held: FileEntry | None = None
    for entry in entries:
        if held is not None:
            if entry.path == held.path + CHECKSUM_SUFFIX:
                held = dataclasses.replace(held, checksum_url=entry.url)
            yield held
        held = entry
    if held is not None:
        yield held


def pair_checksum_pages(pages: Iterable[list[FileEntry]]) -> Iterator[list[FileEntry]]:
    """pair_checksums over a stream of pages, keeping it in pages for the store.

    Each page's last entry is held back to the next page, in case its sidecar opens it.
    """
    held: list[FileEntry] = []
    for page in pages:
        paired = list(pair_checksums(held + page))
        held = paired[-1:]
        if paired[:-1]:
            yield paired[:-1]
    if held:
        yield held


def parse_checksum_file(text: str, expected_name: str) -> str:
    """The lower-case sha256 hex that a `sha256sum`-format file gives for `expected_name`.

    Only basenames are compared: Binance's sidecars name the zip without its directory.
    Raises ValueError saying what is wrong with the file.
    """
    wanted = PurePosixPath(expected_name).name
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"checksum file for {wanted!r} is empty")
    names: list[str] = []
    for line in lines:
        match = CHECKSUM_LINE.match(line)
        if match is None:
            raise ValueError(
                f"checksum file for {wanted!r}: {line[:120]!r} is not '<64 hex digits>  <name>'"
            )
        name = PurePosixPath(match["name"].strip()).name
        if name == wanted:
            return match["digest"].lower()
        names.append(name)
    raise ValueError(f"checksum file names {', '.join(map(repr, names[:5]))}, not {wanted!r}")


async def sidecar_sha256(
    engine: Engine, label: str, checksum_url: str, path: str, access: Access
) -> str:
    """The sha256 that the sidecar at checksum_url gives for the file at path."""
    url, headers = access.url(checksum_url), dict(access.headers)
    body = await engine.get(url, label=label, max_size=SIDECAR_MAX, headers=headers)
    text = body.data.decode("utf-8", "replace")
    try:
        return parse_checksum_file(text, PurePosixPath(path).name)
    except ValueError as exc:
        raise fail("verify", "checksum", f"bad sidecar {checksum_url}: {exc}") from None
