"""One transfer: stream a file to `<path>.partial`, resume it, verify it.

A transfer never marks anything done itself; it returns once the bytes are
received and hashed, and the installer (install.py) makes them durable. Failures
come back as a `Failure` (step, error class, message, retryable) so the scheduler can record
them; a disk that fails under it is `DiskFailed`, which holds the jobs writing there.
"""

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from loguru import logger

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
from bulkforge.daemon.durable import DiskFailed, disk_errors, disk_failed, make_dirs
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.transfer.engine import Engine
from bulkforge.daemon.transfer.failed import fail
from bulkforge.daemon.transfer.hashes import Hashes
from bulkforge.daemon.transfer.protocol import (
    RANGES_REFUSED,
    RESTART,
    ToFile,
    ToRange,
    validator_of,
)
from bulkforge.proto.units import size_text, sizes_apart

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
    # The origin's ETag/Last-Modified for these bytes, stored with the file's next state.
    validator: str | None = None
    # Fetched as ranges: its segment rows go once it is done.
    ranged: bool = False
    # The sha256 bfd computed of these bytes, whatever the manifest gave: recorded with
    # the file's `done`, written in its batch's manifest, checked by `bfctl verify`.
    sha256: str | None = None

    def installable(self, file_id: int) -> Installable:
        return Installable(
            self.partial,
            self.target,
            self.size,
            self.installed,
            file_id,
            self.ranged,
            self.sha256,
        )


def _expected(row: FileRow) -> tuple[str | None, str | None]:
    """The strongest checksum the row knows: sha256, else md5, else none (size only).

    Returns (expected hex digest, kind).
    """
    if row.sha256:
        return row.sha256, "sha256"
    if row.md5:
        return row.md5, "md5"
    return None, None


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

        on_validator hears the origin's ETag/Last-Modified, so a later resume can send it
        as If-Range: before the body of a large file (or one of unknown size), and when it
        fails with bytes already in the partial. A completed transfer carries it in
        Received.validator instead, for the caller to store with the file's next state
        (one write per file, not two).
        """
        # A fresh row's place is a few system calls (path checks; the worker makes its
        # directories once the origin answers with the file): cheaper on the loop than a hop
        # to a thread, which queued for 8 ms a file at 1,000 files/s. A row that
        # began before may hash a whole file already in place: that goes to a thread.
        if row.validator:
            place = await asyncio.to_thread(self._place, row, dest)
        else:
            place = self._place(row, dest)
        if place.existing is not None:
            return place.existing
        target, partial = place.target, place.partial
        if self._ledger.wants_segments(row.size):
            try:
                return await self._receive_ranges(
                    row, dest, target, partial, progress, on_validator, access
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
                    row, dest, target, partial, offset, progress, on_validator, access
                )
            except _RestartFromZero:
                _log_restart(row, offset, "would not continue it")
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
            if disk_failed(exc):
                raise DiskFailed(f"cannot place {dest / row.path}: {exc.strerror}") from None
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
        _check_dest(dest)  # its directories are made once the origin answers with the file
        offset = 0
        if row.validator:
            with contextlib.suppress(FileNotFoundError):
                offset = partial.stat().st_size
        return _Place(target, partial, None, offset)

    async def _receive_ranges(
        self,
        row: FileRow,
        dest: Path,
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
        await asyncio.to_thread(_prepare_dir, target.parent, dest)
        with disk_errors(partial):
            await asyncio.to_thread(_preallocate, partial, row.size, resuming)
        fetch = RangeFetch(
            url=access.url(row.url),
            headers=access.headers,
            partial=str(partial),
            validator=row.validator if resuming else None,
            progress=progress,
            on_validator=on_validator,
        )
        progress(sum(s.stop - s.start for s in segments if s.done))
        expected, kind = _expected(row)
        hashes = Hashes(kind)  # sha256 always: what bfd records for verify
        prefix = PrefixHasher(hashes, str(partial), segments)
        hashing: asyncio.Task | None = asyncio.create_task(prefix.run())
        try:
            await fetch_all(
                fetch,
                segments,
                self._ledger,
                row.id,
                self._fetch_range,
                prefix.mark_done,
            )
            try:
                await hashing
            except OSError as exc:
                if disk_failed(exc):
                    raise DiskFailed(f"cannot read back {partial}: {exc.strerror}") from None
                raise fail("verify", "io", f"cannot read back {partial}: {exc}") from None
        finally:
            if not hashing.done():
                hashing.cancel()
                await asyncio.gather(hashing, return_exceptions=True)
        digest, validator = hashes.hexdigest(kind), fetch.validator
        return Received(
            partial,
            target,
            row.size,
            digest,
            expected,
            kind,
            False,
            validator,
            True,
            hashes.hexdigest(),
        )

    async def _fetch_range(self, fetch: RangeFetch, segment: Segment) -> None:
        """One range into its place in the partial, fsynced (by the worker) before it returns."""
        headers = {
            **fetch.headers,
            "accept-encoding": "identity",
            "range": f"bytes={segment.start}-{segment.stop - 1}",
        }
        if fetch.validator:
            headers["if-range"] = fetch.validator
        sink = ToRange(fetch.partial, segment.start, segment.stop)
        answer = await self._engine.run(
            fetch.url, sink, label=KIND, headers=headers, progress=fetch.progress
        )
        if answer.refused == RANGES_REFUSED:
            raise RangesRefused()
        validator = validator_of(answer.headers)
        if fetch.validator is None:
            fetch.validator = validator
            fetch.on_validator(validator)
        elif validator != fetch.validator:
            raise RangesRefused()  # the file changed between two of its ranges

    async def _stream(
        self,
        row: FileRow,
        dest: Path,
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
        expected, kind = _expected(row)
        html_ok = _html_may_be_the_file(row.path)
        sink = ToFile(str(partial), offset, kind, row.size, html_ok, str(dest))
        told = row.validator

        def heard(validator: str | None) -> None:
            nonlocal told
            if validator != told:
                told = validator
                on_validator(validator)

        answer = await self._engine.run(
            access.url(row.url),
            sink,
            label=KIND,
            headers=headers,
            progress=progress,
            on_head=heard,
        )
        if answer.refused == RESTART:
            raise _RestartFromZero()
        if offset and answer.status == 200:
            _log_restart(row, offset, "sent the whole file (it ignores Range, or it changed)")
        validator, size = validator_of(answer.headers), answer.size
        return Received(
            partial,
            target,
            size,
            answer.digest,
            expected,
            kind,
            False,
            validator,
            sha256=answer.sha256,
        )

    def _matching_target(self, row: FileRow, target: Path) -> Received | None:
        """A target already in place whose checksum proves it (a crash after the rename).

        Only a checksum counts: an unrelated file of the same size is not this one.
        """
        expected, kind = _expected(row)
        if kind is None:
            return None
        try:
            size = target.stat().st_size
        except FileNotFoundError:
            return None
        if row.size is not None and size != row.size:
            return None
        hashes = Hashes(kind)
        _hash_file(target, hashes)
        if hashes.hexdigest(kind) != expected:
            return None
        return Received(
            partial_path(target),
            target,
            size,
            expected,
            expected,
            kind,
            True,
            row.validator,
            sha256=hashes.hexdigest(),
        )

    @staticmethod
    def verify(row: FileRow, received: Received) -> None:
        if row.size is not None and received.size != row.size:
            got, wanted = sizes_apart(received.size, row.size)
            raise fail("verify", "size", f"received {got}, expected {wanted}")
        if received.expected is not None and received.digest != received.expected:
            raise fail(
                "verify",
                "checksum",
                f"{received.kind} mismatch: got {received.digest}, expected {received.expected}",
            )

    async def discard(self, row: FileRow, received: Received) -> None:
        """Drop bytes that failed verification, with any ranges that claimed to hold them."""
        with disk_errors(received.partial):
            await asyncio.to_thread(received.partial.unlink, True)
        await self._ledger.forget(row.id)


def _check_dest(dest: Path) -> None:
    """The destination itself is never created here: when it is gone, a disk was
    unmounted or removed, and writing into the bare mount point would be wrong.
    Nothing is cached: operators empty or swap destinations under a running daemon.
    """
    if not dest.is_dir():
        raise fail(
            "transfer", "dest", f"destination {dest} does not exist (disk unmounted or removed?)"
        )


def _prepare_dir(directory: Path, dest: Path) -> None:
    """mkdir -p below dest, fsyncing each parent whose entries changed (power-loss safe)."""
    _check_dest(dest)
    try:
        make_dirs(directory, dest)
    except OSError as exc:
        if disk_failed(exc):
            raise DiskFailed(f"cannot create {exc.filename}: {exc.strerror}") from None
        raise fail("transfer", "io", f"cannot create {exc.filename}: {exc.strerror}") from None


def _html_may_be_the_file(path: str) -> bool:
    """An HTML answer is an error page unless the file itself is HTML."""
    return PurePosixPath(path).suffix.lower() in (".html", ".htm")


def _preallocate(partial: Path, size: int, resuming: bool) -> None:
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        if not resuming:
            os.ftruncate(fd, 0)  # nothing of an older partial is trusted
        preallocate(fd, size)
    finally:
        os.close(fd)


def _log_restart(row: FileRow, offset: int, why: str) -> None:
    """A resume the origin did not continue: its bytes so far were fetched again, which
    watch shows as "restarted", never as a negative rate."""
    logger.info(
        "{}: asked to resume at {}, the origin {}; restarted from zero",
        row.path,
        size_text(offset),
        why,
    )


class _RestartFromZero(Exception):
    """The origin will not continue our partial: drop it and start again."""
