"""The data.binance.vision layout: each `X.zip` is published beside `X.zip.CHECKSUM`.

The sidecar holds the zip's sha256 in `sha256sum` format; it is the strongest checksum the
source offers (the S3 ETag of a multipart upload is no digest at all), so the downloader
verifies the zip against it, and keeps the sidecar too: the listing pairs each zip with its
sidecar's URL, and a transfer fetches the sidecar's digest before the zip.

A pair is one unit: the zip's transfer (its first, or any retry) installs the very sidecar
it verified the zip against beside it, durably, and records it in the sidecar's own row
(size, sha256, md5: what `verify` checks), before the zip's row says done; so on disk
`sha256sum -c X.zip.CHECKSUM` holds for every zip done, whatever upstream changed between
two attempts. (The sidecar's own row fetches it too; it is the same bytes unless upstream
changed it again since, and then the zip's next fetch brings both anew.)
"""

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from bulkforge.daemon.downloader.access import Access
from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.durable import fsync_or_die, make_dirs, write_durably
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


@dataclasses.dataclass(frozen=True)
class Sidecar:
    """A zip's sidecar as fetched: the digest it gives for the zip, and its bytes."""

    sha256: str
    data: bytes


async def fetch_sidecar(
    engine: Engine, label: str, checksum_url: str, path: str, access: Access
) -> Sidecar:
    """The sidecar at checksum_url, and the sha256 it gives for the file at path."""
    url, headers = access.url(checksum_url), dict(access.headers)
    body = await engine.get(url, label=label, max_size=SIDECAR_MAX, headers=headers)
    text = body.data.decode("utf-8", "replace")
    try:
        return Sidecar(parse_checksum_file(text, PurePosixPath(path).name), bytes(body.data))
    except ValueError as exc:
        raise fail("verify", "checksum", f"bad sidecar {checksum_url}: {exc}") from None


def sidecar_row(path: str, sidecar: Sidecar) -> tuple[str, int, str, str]:
    """(path, size, sha256, md5) of the sidecar of the zip at path, as its row records it."""
    data = sidecar.data
    return (
        f"{path}{CHECKSUM_SUFFIX}",
        len(data),
        hashlib.sha256(data).hexdigest(),
        hashlib.md5(data, usedforsecurity=False).hexdigest(),
    )


def install_sidecar(dest: Path, path: str, sidecar: Sidecar) -> bool:
    """The sidecar a zip at dest/path was verified against, beside it: written durably
    (temp name, fsync, rename, fsync of the directory) unless it is there already.
    Returns whether it was written. Runs in a thread; OSError when the disk refuses,
    DiskFailed when the disk failed under it."""
    target = dest / f"{path}{CHECKSUM_SUFFIX}"
    try:
        if target.read_bytes() == sidecar.data:
            return False
    except FileNotFoundError:
        pass
    make_dirs(target.parent, dest)
    write_durably(target, sidecar.data)
    fsync_or_die(target.parent)
    return True
