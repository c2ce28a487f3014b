"""Large files as parallel byte ranges, each resumable on its own.

The ranges of a file are planned once and stored. Each range is fetched with
its own `Range` request (with `If-Range` once the origin's validator is known),
written in place by a transfer worker into a partial preallocated to the full
size, and marked done only after the worker fsynced it. After a restart only the ranges
not done are fetched. The whole file is hashed once at the end. An origin that
answers a range with 200 (it ignores Range, or the file changed) sends the file
back to a single stream from zero.
"""

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import apsw

from bulkforge.daemon.store import Writer

HASH_BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Segment:
    idx: int
    start: int
    stop: int  # exclusive
    done: bool


class RangesRefused(Exception):
    """The origin does not serve this file by ranges (any more): fetch it whole."""


def plan(conn: apsw.Connection, file_id: int, size: int, segment_size: int) -> list[Segment]:
    """The file's ranges: those stored, or a new plan of `segment_size` pieces."""
    stored = conn.execute(
        "SELECT idx, start, stop, done FROM segments WHERE file_id = ? ORDER BY idx", (file_id,)
    ).fetchall()
    if stored:
        return [Segment(idx, start, stop, bool(done)) for idx, start, stop, done in stored]
    pieces = [
        (file_id, idx, start, min(start + segment_size, size))
        for idx, start in enumerate(range(0, size, segment_size))
    ]
    conn.executemany("INSERT INTO segments (file_id, idx, start, stop) VALUES (?, ?, ?, ?)", pieces)
    return [Segment(idx, start, stop, False) for _, idx, start, stop in pieces]


def mark_done(conn: apsw.Connection, file_id: int, idx: int) -> None:
    conn.execute(
        "UPDATE segments SET done = 1 WHERE file_id = ? AND idx = ? AND done = 0", (file_id, idx)
    )


def forget(conn: apsw.Connection, file_id: int) -> None:
    conn.execute("DELETE FROM segments WHERE file_id = ?", (file_id,))


class Ledger:
    """The segment operations a transfer needs, each committed through the writer."""

    def __init__(self, writer: Writer, segment_size: int, per_file: int):
        self._writer = writer
        self.segment_size = segment_size
        self.per_file = per_file

    def wants_segments(self, size: int | None) -> bool:
        return size is not None and size >= 2 * self.segment_size

    async def plan(self, file_id: int, size: int) -> list[Segment]:
        return await self._writer.call(lambda c: plan(c, file_id, size, self.segment_size))

    async def done(self, file_id: int, idx: int) -> None:
        await self._writer.call(lambda c: mark_done(c, file_id, idx))

    async def forget(self, file_id: int) -> None:
        await self._writer.call(lambda c: forget(c, file_id))


@dataclass
class RangeFetch:
    """What fetching the ranges of one file shares."""

    url: str
    headers: Mapping[str, str]
    partial: str
    validator: str | None
    progress: Callable[[int], None]
    on_validator: Callable[[str | None], None]


class PrefixHasher:
    """Hashes a file's ranges in order as they are done, while later ones still download.

    The whole file is still hashed exactly once, front to back; it only no longer
    waits for the last range to start.
    """

    def __init__(self, hasher, path: str, segments: list[Segment]):
        self._hasher = hasher
        self._path = path
        self._segments = segments
        self._done = {segment.idx for segment in segments if segment.done}
        self._next = 0
        self._more = asyncio.Event()

    def mark_done(self, idx: int) -> None:
        self._done.add(idx)
        self._more.set()

    async def run(self) -> None:
        while self._next < len(self._segments):
            if self._next not in self._done:
                self._more.clear()
                await self._more.wait()
                continue
            segment = self._segments[self._next]
            await asyncio.to_thread(_hash_range, self._path, self._hasher, segment)
            self._next += 1


def _hash_range(path: str, hasher, segment: Segment) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        position = segment.start
        while position < segment.stop:
            block = os.pread(fd, min(HASH_BLOCK, segment.stop - position), position)
            if not block:
                raise OSError(f"{path} ends at byte {position}, before its last range")
            hasher.update(block)
            position += len(block)
    finally:
        os.close(fd)


async def fetch_all(
    fetch: RangeFetch,
    segments: list[Segment],
    ledger: Ledger,
    file_id: int,
    fetch_one: Callable,
    on_done: Callable[[int], None] = lambda idx: None,
) -> None:
    """Fetch every range not done, `ledger.per_file` at a time; the first failure stops all."""
    gate = asyncio.Semaphore(ledger.per_file)

    async def one(segment: Segment) -> None:
        async with gate:
            await fetch_one(fetch, segment)
            await ledger.done(file_id, segment.idx)
            on_done(segment.idx)

    tasks = [asyncio.create_task(one(s)) for s in segments if not s.done]
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()


def preallocate(fd: int, size: int) -> None:
    """Give the partial its full size once, so ranges can be written anywhere in it."""
    if os.fstat(fd).st_size != size:
        os.ftruncate(fd, size)
