"""Where a transfer worker puts a body: memory, a partial file, or a range of one.

A sink first judges the origin's answer (`open`): a status, a Content-Range or a
length that cannot give what the order asks ends the transfer with a `Stop`
before a byte is written. Then it takes the body as it arrives (`write`), hashing
a file while it is written, and says what it holds at the end (`close`). Sinks
run in the workers: standard library only.
"""

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from bulkforge.daemon.durable import DiskFailed, disk_failed, make_dirs
from bulkforge.daemon.transfer.classify import status_miss, too_large
from bulkforge.daemon.transfer.hashes import Hashes
from bulkforge.daemon.transfer.protocol import (
    RANGES_REFUSED,
    RESTART,
    Miss,
    ToFile,
    ToMemory,
    ToRange,
)
from bulkforge.proto.units import size_text, sizes_apart

HASH_READ = 1024 * 1024


@dataclass
class Head:
    """The origin's answer: status line and headers (names lowercased)."""

    status: int
    reason: str
    headers: dict[str, str]

    def length(self) -> int | None:
        value = self.headers.get("content-length", "")
        return int(value) if value.isdigit() else None

    def range_start(self) -> int | None:
        try:
            unit, rest = self.headers.get("content-range", "").split(" ", 1)
            return int(rest.split("-", 1)[0]) if unit == "bytes" else None
        except ValueError:
            return None


class Stop(Exception):
    """The transfer ends here: with a miss, a refusal (RESTART, RANGES_REFUSED) or fatally."""

    def __init__(self, miss: Miss | None = None, refused: str | None = None, fatal: str = ""):
        super().__init__(fatal or refused or (miss.message if miss else ""))
        self.miss = miss
        self.refused = refused
        self.fatal = fatal or None


@dataclass
class Held:
    """What a sink holds at the end (or so far)."""

    size: int
    digest: str | None = None
    data: bytes | None = None
    # The sha256 of every byte of the file, whatever checksum its manifest gave.
    sha256: str | None = None


class MemorySink:
    def __init__(self, order: ToMemory):
        self._max = order.max_size
        self._parts: list[bytes] = []
        self.size = 0

    def open(self, head: Head) -> None:
        if head.status != 200:
            raise Stop(status_miss(head.status, head.reason, head.headers))
        announced = head.length()
        if announced is not None and announced > self._max:
            raise Stop(too_large(announced, self._max))

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max:
            raise Stop(too_large(self.size, self._max))
        self._parts.append(data)

    def close(self) -> Held:
        return Held(self.size, data=b"".join(self._parts))

    def abandon(self) -> None:
        self._parts.clear()


class FileSink:
    """The body into the partial: continuing it after a 206, rewriting it after a 200."""

    def __init__(self, order: ToFile):
        self._order = order
        self._hashes = Hashes(order.checksum)
        self._fd: int | None = None
        self.size = 0

    def open(self, head: Head) -> None:
        order = self._order
        start = self._start(head)
        announced = head.length()
        if _html_instead_of_file(head, order, start, announced):
            raise Stop(
                Miss(
                    "transfer",
                    "html",
                    f"the origin answered {head.status} with an HTML page, not the file "
                    "(an error page, a login or a captive portal?)",
                )
            )
        if order.size is not None and announced is not None and start + announced != order.size:
            announces, says = sizes_apart(start + announced, order.size)
            message = f"the origin announces {announces}, the manifest says {says}"
            raise Stop(Miss("transfer", "size", message))
        try:
            self._fd = _open_partial(order)
            os.ftruncate(self._fd, start)
            os.lseek(self._fd, start, os.SEEK_SET)
            if start:
                _hash_prefix(order.path, self._hashes, start)
        except OSError as exc:
            raise _write_stop(exc, order.path) from None
        except DiskFailed as exc:
            raise Stop(fatal=str(exc)) from None
        self.size = start

    def _start(self, head: Head) -> int:
        """Where the body begins in the file: 0 after a 200, the offset after a fitting 206."""
        offset = self._order.offset
        if head.status == 200:
            return 0
        if offset and head.status == 206:
            if head.range_start() != offset:
                raise Stop(refused=RESTART)
            return offset
        if offset and head.status == 416:
            raise Stop(refused=RESTART)
        raise Stop(status_miss(head.status, head.reason, head.headers))

    def write(self, data: bytes) -> None:
        expected = self._order.size
        if expected is not None and self.size + len(data) > expected:
            raise Stop(Miss("transfer", "size", f"more than the {size_text(expected)} expected"))
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            raise _write_stop(exc, self._order.path) from None
        self._hashes.update(data)
        self.size += len(data)

    def close(self) -> Held:
        """Closed, not synced: the installer makes a group of files durable at once."""
        fd, self._fd = self._fd, None
        try:
            os.close(fd)
        except OSError as exc:
            raise _write_stop(exc, self._order.path) from None
        hashes = self._hashes
        return Held(self.size, hashes.hexdigest(self._order.checksum), sha256=hashes.hexdigest())

    def abandon(self) -> None:
        """Close after a failure; the partial is resumed or replaced later."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class RangeSink:
    """The body of a 206 for exactly [start, stop) of the preallocated partial."""

    def __init__(self, order: ToRange):
        self._order = order
        self._fd: int | None = None
        self._position = order.start

    @property
    def size(self) -> int:
        return self._position - self._order.start

    def open(self, head: Head) -> None:
        if head.status == 200:
            raise Stop(refused=RANGES_REFUSED)
        if head.status != 206:
            raise Stop(status_miss(head.status, head.reason, head.headers))
        if head.range_start() != self._order.start:
            raise Stop(refused=RANGES_REFUSED)
        try:
            self._fd = os.open(self._order.path, os.O_WRONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise _write_stop(exc, self._order.path) from None

    def write(self, data: bytes) -> None:
        if self._position + len(data) > self._order.stop:
            raise Stop(Miss("transfer", "size", "the origin sent past the range asked"))
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, self._position)
                view, self._position = view[written:], self._position + written
        except OSError as exc:
            raise _write_stop(exc, self._order.path) from None

    def close(self) -> Held:
        """Fsynced before the answer: bfd marks the range done as soon as it hears of it."""
        order = self._order
        if self._position != order.stop:
            self.abandon()
            message = f"range {order.start}-{order.stop - 1} ended at byte {self._position}"
            raise Stop(Miss("transfer", "short_body", message))
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            raise Stop(fatal=f"cannot fsync a range of {order.path}: {exc}") from None
        finally:
            os.close(fd)
        return Held(self.size)

    def abandon(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


Sink = MemorySink | FileSink | RangeSink


def sink_for(order: ToMemory | ToFile | ToRange) -> Sink:
    if isinstance(order, ToFile):
        return FileSink(order)
    if isinstance(order, ToRange):
        return RangeSink(order)
    return MemorySink(order)


def _html_instead_of_file(head: Head, order: ToFile, start: int, announced: int | None) -> bool:
    """An HTML page where a file that is not HTML, or not of this size, was expected."""
    if order.html_ok or not head.headers.get("content-type", "").startswith("text/html"):
        return False
    return order.size is None or announced is None or start + announced != order.size


def _hash_prefix(path: str, hasher, limit: int) -> None:
    """Feed the first `limit` bytes of path to hasher (a resumed file's earlier part)."""
    done = 0
    with open(path, "rb") as handle:
        while done < limit:
            block = handle.read(min(HASH_READ, limit - done))
            if not block:
                raise Stop(
                    Miss("transfer", "io", f"{path} is shorter than the {size_text(limit)} resumed")
                )
            hasher.update(block)
            done += len(block)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_partial(order: ToFile) -> int:
    """The partial, open for writing, its missing directories below order.root made first."""
    # O_NOFOLLOW: no symlink planted at <path>.partial may carry the bytes outside dest.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
    try:
        return os.open(order.path, flags, 0o644)
    except FileNotFoundError:
        if not order.root:
            raise
    make_dirs(Path(order.path).parent, Path(order.root))
    return os.open(order.path, flags, 0o644)


def _write_stop(exc: OSError, path: str) -> Stop:
    if disk_failed(exc):
        return Stop(fatal=f"cannot write {path}: {exc.strerror}")
    return Stop(_write_miss(exc, path))


def _write_miss(exc: OSError, path: str) -> Miss:
    if exc.errno == errno.ENOSPC:
        return Miss("transfer", "no_space", f"no space left on {os.path.dirname(path)}")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        # Untrusted names clash (a file `x` and a file `x/y`).
        return Miss("transfer", "path", f"cannot place {path}: {exc.strerror}")
    return Miss("transfer", "io", f"cannot write {path}: {exc.strerror or exc}")
