"""One transfer: stream a file to `<path>.partial`, resume it, verify it.

A transfer never marks anything done itself; it returns once the bytes are
received and hashed, and the installer (install.py) makes them durable. Failures
come back as a `Failure` (step, error class, message, retryable) so the scheduler can record
them; a failed fsync is `DiskFatal`, which stops the daemon.
"""

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from bulkforge.daemon.downloader.access import PUBLIC, Access
from bulkforge.daemon.downloader.files import FileRow
from bulkforge.daemon.downloader.install import Installable
from bulkforge.daemon.downloader.paths import has_size, partial_path, resolve_inside
from bulkforge.daemon.downloader.register import KIND
from bulkforge.daemon.downloader.segments import (
    Ledger,
    PrefixHasher,
    RangeFetch,
    RangesRefused,
    Segment,
    fetch_all,
    preallocate,
)
from bulkforge.daemon.durable import DiskFatal, make_dirs
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.transfer.classify import fail, status_failure
from bulkforge.daemon.transfer.engine import Engine

if TYPE_CHECKING:
    from aiohttp import ClientResponse

CHUNK = 256 * 1024
# Received bytes gathered before one worker-thread hop writes and hashes them.
FLUSH_AT = 256 * 1024
HASH_READ = 1024 * 1024


@dataclass(frozen=True)
class _Place:
    target: Path
    partial: Path
    existing: "Received | None"
    offset: int = 0


@dataclass
class Received:
    partial: Path
    target: Path
    size: int
    digest: str | None
    # What the digest must be, and of which kind (it may come from a sidecar, not the row).
    expected: str | None = None
    kind: str | None = None
    # True when the target was already in place and matching: nothing to install.
    installed: bool = False

    def installable(self) -> Installable:
        return Installable(self.partial, self.target, self.size, self.installed)


def _hasher(row: FileRow):
    """The strongest checksum the row knows: sha256, else md5, else none (size only).

    Returns (hasher, expected hex digest, kind).
    """
    if row.sha256:
        return hashlib.sha256(), row.sha256, "sha256"
    if row.md5:
        return hashlib.md5(), row.md5, "md5"
    return None, None, None


def _hash_file(path: Path, hasher, limit: int | None = None) -> int:
    """Feed the first `limit` bytes of path (all when None) to hasher; returns bytes read."""
    done = 0
    with path.open("rb") as handle:
        while limit is None or done < limit:
            want = HASH_READ if limit is None else min(HASH_READ, limit - done)
            block = handle.read(want)
            if not block:
                break
            if hasher is not None:
                hasher.update(block)
            done += len(block)
    return done


def _validator(response: "ClientResponse") -> str | None:
    """A validator usable in If-Range: a strong ETag, else Last-Modified."""
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("last-modified")


def _range_start(response: "ClientResponse") -> int | None:
    content_range = response.headers.get("content-range", "")
    try:
        unit, rest = content_range.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


class Fetcher:
    """Transfers files through the transfer engine, a connection slot per request."""

    def __init__(self, engine: Engine, ledger: Ledger):
        self._engine = engine
        self._ledger = ledger

    async def receive(
        self,
        row: FileRow,
        dest: Path,
        progress: Callable[[int], None],
        on_validator: Callable[[str | None], None],
        access: Access = PUBLIC,
    ) -> Received:
        """Bytes of row into its partial (resuming when possible), hashed on the way.

        on_validator hears the origin's ETag/Last-Modified as soon as the headers
        arrive, so a later resume can send it as If-Range.
        """
        # Path checks, a matching file already in place, directories and the resume offset:
        # all file system work, so one worker-thread hop instead of stalls on the event loop.
        place = await asyncio.to_thread(self._place, row, dest)
        if place.existing is not None:
            return place.existing
        target, partial = place.target, place.partial
        if self._ledger.wants_segments(row.size):
            try:
                return await self._receive_ranges(
                    row, target, partial, progress, on_validator, access
                )
            except RangesRefused:
                await self._ledger.forget(row.id)
                await asyncio.to_thread(partial.unlink, True)
                row = dataclasses.replace(row, validator=None)
                place = dataclasses.replace(place, offset=0)
        offset = place.offset
        for _ in range(2):
            try:
                return await self._stream(
                    row, target, partial, offset, progress, on_validator, access
                )
            except _RestartFromZero:
                await asyncio.to_thread(partial.unlink, True)
                offset = 0
        raise fail("transfer", "range", "the origin keeps refusing to resume or restart")

    def _place(self, row: FileRow, dest: Path) -> "_Place":
        """Where the file goes and what is already there. Runs in a worker thread."""
        try:
            return self._settle_place(row, dest)
        except InvalidArgument as exc:
            raise fail("connect", "path", str(exc), False) from None
        except OSError as exc:
            # Untrusted names clash (a file `x` and a file `x/y`), or a component is not ours.
            raise fail("transfer", "path", f"cannot place {row.path}: {exc.strerror}") from None

    def _settle_place(self, row: FileRow, dest: Path) -> "_Place":
        target = resolve_inside(dest, row.path)
        partial = partial_path(target)
        # A row with a validator began a transfer before: a crash may have come after its
        # rename. A fresh row is always fetched, whatever a file of that name holds.
        existing = self._matching_target(row, target) if row.validator else None
        if existing is not None:
            return _Place(target, partial, existing)
        _prepare_dir(dest, target.parent)
        offset = 0
        if row.validator:
            with contextlib.suppress(FileNotFoundError):
                offset = partial.stat().st_size
        return _Place(target, partial, None, offset)

    async def _receive_ranges(
        self,
        row: FileRow,
        target: Path,
        partial: Path,
        progress: Callable[[int], None],
        on_validator: Callable[[str | None], None],
        access: Access,
    ) -> Received:
        """Fetch the ranges not yet done into a preallocated partial, then hash it whole."""
        assert row.size is not None
        segments = await self._ledger.plan(row.id, row.size)
        resuming = any(segment.done for segment in segments)
        if resuming and not (row.validator and has_size(partial, row.size)):
            # Done ranges count only in the partial they were written to, of the same version.
            await self._ledger.forget(row.id)
            segments, resuming = await self._ledger.plan(row.id, row.size), False
        fd = await asyncio.to_thread(_open_for_ranges, partial, row.size, resuming)
        fetch = RangeFetch(
            url=access.url(row.url),
            headers=access.headers,
            fd=fd,
            validator=row.validator if resuming else None,
            progress=progress,
            throttle=self._engine.throttle,
            on_validator=on_validator,
        )
        try:
            progress(sum(s.stop - s.start for s in segments if s.done))
            hasher, expected, kind = _hasher(row)
            prefix = PrefixHasher(hasher, str(partial), segments) if hasher else None
            hashing = asyncio.create_task(prefix.run()) if prefix else None
            try:
                await fetch_all(
                    fetch,
                    segments,
                    self._ledger,
                    row.id,
                    self._fetch_range,
                    prefix.mark_done if prefix else lambda idx: None,
                )
                if hashing is not None:
                    try:
                        await hashing
                    except OSError as exc:
                        raise fail("verify", "io", f"cannot read back {partial}: {exc}") from None
            finally:
                if hashing is not None and not hashing.done():
                    hashing.cancel()
                    await asyncio.gather(hashing, return_exceptions=True)
        finally:
            # Cancelled ranges may still be writing in their threads: never close under them.
            await asyncio.shield(fetch.settle())
            os.close(fd)
        digest = hasher.hexdigest() if hasher else None
        return Received(partial, target, row.size, digest, expected, kind)

    async def _fetch_range(self, fetch: RangeFetch, segment: Segment) -> None:
        """One range into its place in the partial, fsynced before the caller marks it done."""
        headers = {
            **fetch.headers,
            "accept-encoding": "identity",
            "range": f"bytes={segment.start}-{segment.stop - 1}",
        }
        if fetch.validator:
            headers["if-range"] = fetch.validator
        position = segment.start
        async with self._engine.exchange(fetch.url, label=KIND, headers=headers) as response:
            _accept_range(response, segment, fetch)
            async for chunk in response.content.iter_chunked(CHUNK):
                if position + len(chunk) > segment.stop:
                    raise fail("transfer", "size", "the origin sent past the range asked")
                await fetch.io(_pwrite_all, fetch.fd, chunk, position)
                position += len(chunk)
                fetch.progress(len(chunk))
                await fetch.throttle(len(chunk))
        if position != segment.stop:
            raise fail(
                "transfer",
                "short_body",
                f"range {segment.start}-{segment.stop - 1} ended at byte {position}",
            )
        try:
            await fetch.io(os.fsync, fetch.fd)
        except OSError as exc:
            raise DiskFatal(f"cannot fsync a range of {fetch.url}: {exc}") from exc

    async def _stream(
        self,
        row: FileRow,
        target: Path,
        partial: Path,
        offset: int,
        progress: Callable[[int], None],
        on_validator: Callable[[str | None], None],
        access: Access,
    ) -> Received:
        headers = {**access.headers, "accept-encoding": "identity"}
        if offset:
            headers["range"] = f"bytes={offset}-"
            headers["if-range"] = row.validator or ""
        url = access.url(row.url)
        async with self._engine.exchange(url, label=KIND, headers=headers) as response:
            offset = self._accept(response, row, offset)
            validator = _validator(response)
            if validator != row.validator:
                on_validator(validator)
            hasher, expected, kind = _hasher(row)
            if offset and hasher is not None:
                await asyncio.to_thread(_hash_file, partial, hasher, offset)
            size = await self._write_body(response, partial, offset, hasher, row, progress)
        digest = hasher.hexdigest() if hasher else None
        return Received(partial, target, size, digest, expected, kind)

    def _accept(self, response: "ClientResponse", row: FileRow, offset: int) -> int:
        """Check the status; returns the offset the body starts at (0 when it restarts)."""
        status = response.status
        if status == 200:
            return 0
        if status == 206 and offset:
            if _range_start(response) != offset:
                raise _RestartFromZero()
            return offset
        if status == 416 and offset:
            raise _RestartFromZero()
        raise status_failure(response)

    async def _write_body(
        self, response, partial: Path, offset: int, hasher, row: FileRow, progress
    ) -> int:
        announced = response.headers.get("content-length")
        if _html_instead_of_file(response, row, offset, announced):
            raise fail(
                "transfer",
                "html",
                f"the origin answered {response.status} with an HTML page, not the file "
                "(an error page, a login or a captive portal?)",
            )
        if row.size is not None and announced is not None and offset + int(announced) != row.size:
            raise fail(
                "transfer",
                "size",
                f"the origin announces {offset + int(announced)} bytes, "
                f"the manifest says {row.size}",
            )
        received = offset
        if offset:
            progress(offset)
        sink = _PartialSink(partial, offset, hasher)
        # Creating the file, copying into the page cache and hashing cost more of the
        # event loop than the network does: they run in a worker thread, a hop per
        # FLUSH_AT bytes, so a small file is opened, written and closed in one hop.
        pending: list[bytes] = []
        buffered = 0
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                received += len(chunk)
                if row.size is not None and received > row.size:
                    raise fail("transfer", "size", f"more than the {row.size} bytes expected")
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= FLUSH_AT:
                    await asyncio.to_thread(sink.write, pending)
                    pending, buffered = [], 0
                progress(len(chunk))
                await self._engine.throttle(len(chunk))
            await asyncio.to_thread(sink.finish, pending)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise fail("transfer", "no_space", f"no space left on {partial.parent}") from None
            raise fail("transfer", "io", f"cannot write {partial}: {exc.strerror}") from None
        finally:
            sink.abandon()
        return received

    def _matching_target(self, row: FileRow, target: Path) -> Received | None:
        """A target already in place whose checksum proves it (a crash after the rename).

        Only a checksum counts: an unrelated file of the same size is not this one.
        """
        hasher, expected, kind = _hasher(row)
        if hasher is None:
            return None
        try:
            size = target.stat().st_size
        except FileNotFoundError:
            return None
        if row.size is not None and size != row.size:
            return None
        _hash_file(target, hasher)
        if hasher.hexdigest() != expected:
            return None
        return Received(partial_path(target), target, size, expected, expected, kind, True)

    @staticmethod
    def verify(row: FileRow, received: Received) -> None:
        if row.size is not None and received.size != row.size:
            raise fail("verify", "size", f"received {received.size} bytes, expected {row.size}")
        if received.expected is not None and received.digest != received.expected:
            raise fail(
                "verify",
                "checksum",
                f"{received.kind} mismatch: got {received.digest}, expected {received.expected}",
            )

    async def discard(self, row: FileRow, received: Received) -> None:
        """Drop bytes that failed verification, with any ranges that claimed to hold them."""
        await asyncio.to_thread(received.partial.unlink, True)
        await self._ledger.forget(row.id)


def _prepare_dir(dest: Path, directory: Path) -> None:
    """mkdir -p below dest, fsyncing each parent whose entries changed (power-loss safe).

    The destination itself is never created here: when it is gone, a disk was
    unmounted or removed, and writing into the bare mount point would be wrong.
    Nothing is cached: operators empty or swap destinations under a running daemon.
    """
    if not dest.is_dir():
        raise fail(
            "transfer", "dest", f"destination {dest} does not exist (disk unmounted or removed?)"
        )
    try:
        make_dirs(directory, dest)
    except OSError as exc:
        raise fail("transfer", "io", f"cannot create {exc.filename}: {exc.strerror}") from None


def _html_instead_of_file(
    response: "ClientResponse", row: FileRow, offset: int, announced: str | None
) -> bool:
    """An HTML page where a file that is not HTML, or not of this size, was expected."""
    if not response.content_type.startswith("text/html"):
        return False
    if PurePosixPath(row.path).suffix.lower() in (".html", ".htm"):
        return False
    return row.size is None or announced is None or offset + int(announced) != row.size


def _accept_range(response: "ClientResponse", segment: Segment, fetch: RangeFetch) -> None:
    """A 206 for exactly this range of the same version, or the file goes back to one stream."""
    if response.status == 200:
        raise RangesRefused()
    if response.status != 206:
        raise status_failure(response)
    if _range_start(response) != segment.start:
        raise RangesRefused()
    validator = _validator(response)
    if fetch.validator is None:
        fetch.validator = validator
        fetch.on_validator(validator)
    elif validator != fetch.validator:
        raise RangesRefused()


def _open_for_ranges(partial: Path, size: int, resuming: bool) -> int:
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    if not resuming:
        os.ftruncate(fd, 0)  # nothing of an older partial is trusted
    preallocate(fd, size)
    return fd


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _PartialSink:
    """Appends received chunks to the partial file and the hasher, in order."""

    def __init__(self, partial: Path, offset: int, hasher):
        self._partial = partial
        self._offset = offset
        self._hasher = hasher
        self.handle = None

    def open(self) -> None:
        # No symlink planted at <path>.partial may carry the bytes outside dest.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        self.handle = os.fdopen(os.open(self._partial, flags, 0o644), "wb")
        self.handle.seek(self._offset)
        self.handle.truncate()

    def write(self, chunks: list[bytes]) -> None:
        if self.handle is None:
            self.open()
        for chunk in chunks:
            self.handle.write(chunk)
            if self._hasher is not None:
                self._hasher.update(chunk)

    def finish(self, chunks: list[bytes]) -> None:
        """Write the last chunks and close; a failed final flush is an error like any write."""
        self.write(chunks)
        handle, self.handle = self.handle, None
        handle.close()

    def abandon(self) -> None:
        """Close after a failure; the partial is resumed or replaced later."""
        if self.handle is not None:
            with contextlib.suppress(OSError, ValueError):
                self.handle.close()
            self.handle = None


class _RestartFromZero(Exception):
    """The origin will not continue our partial: drop it and start again."""
