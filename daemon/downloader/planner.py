"""The batch planner: cut a file list into batches that each fit on one disk.

A batch may hold at most `space x margin` bytes. Files are taken directory by
directory (directories in name order, files in source order within one), and a
directory is kept in one batch where that costs little: when it does not fit in
what the current batch has left, the batch is closed early only if that leaves
at most KEEP_TOGETHER_WASTE of a disk unused; otherwise the directory is split.
Files larger than a batch can hold are set apart, never dropped: the operator
chooses (`fail`, the default, `skip`, or `own-batch`, one batch each).

Sizes and directory numbers are held in numpy arrays, not one Python object per
file, so a million files plan in about a second and a few tens of MB. numpy is
imported by the functions that plan: an idle bfd, which never plans, goes without.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from bulkforge.daemon.disks import describe_disk, free_bytes
from bulkforge.daemon.downloader.listing import Source, source_pages
from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.proto.units import size_text

if TYPE_CHECKING:
    import numpy as np

# A directory is moved whole to the next batch when that wastes at most this share of a disk.
KEEP_TOGETHER_WASTE = 0.05
# How many oversize files a plan names (all are counted).
OVERSIZE_LISTED = 100


class Oversize(StrEnum):
    """What happens to a file larger than one batch can hold."""

    FAIL = "fail"
    """It ends failed with reason oversize; the rest of the job goes on."""
    SKIP = "skip"
    """It is recorded as skipped and never fetched."""
    OWN_BATCH = "own-batch"
    """It gets a batch of its own, for a disk large enough that the operator provides."""


@dataclass(frozen=True)
class PlannedBatch:
    index: int
    files: int
    bytes: int
    directories: int
    # Directories whose files are spread over this batch and another.
    split_directories: int
    oversize: bool = False


@dataclass
class Plan:
    space: int
    margin: float
    files: int
    bytes: int
    batches: list[PlannedBatch]
    oversize_files: int
    oversize_bytes: int
    # (size, path) of the largest oversize files, largest first.
    oversize_listed: list[tuple[int, str]]
    oversize_policy: Oversize
    # Batch of each file in source order; -1 for an oversize file not given a batch.
    assignment: np.ndarray = field(repr=False)

    @property
    def capacity(self) -> int:
        return capacity(self.space, self.margin)

    @property
    def peak_bytes(self) -> int:
        """The most any one disk holds: the fullest batch."""
        return max((batch.bytes for batch in self.batches), default=0)


def capacity(space: int, margin: float) -> int:
    return int(space * margin)


class FileSizes:
    """The sizes and directories of a listing, gathered page by page in compact arrays.

    Given the batch limit, it also keeps the names of the largest files above it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes = array("q")
        self.dirs = array("q")
        self.unknown_size = 0
        self._dir_ids: dict[str, int] = {}
        self._oversize: list[tuple[int, str]] = []  # a min-heap of the largest

    def add_pages(self, pages: Iterable[list[FileEntry]]) -> FileSizes:
        for page in pages:
            for entry in page:
                self.add(entry.path, entry.size)
        return self

    def add(self, path: str, size: int | None) -> None:
        if size is None:
            self.unknown_size += 1
            size = 0
        elif size > self.limit:
            if len(self._oversize) < OVERSIZE_LISTED:
                heapq.heappush(self._oversize, (size, path))
            elif (size, path) > self._oversize[0]:
                heapq.heapreplace(self._oversize, (size, path))
        directory = self._dir_ids.setdefault(path.rpartition("/")[0], len(self._dir_ids))
        self.sizes.append(size)
        self.dirs.append(directory)

    def largest_oversize(self) -> list[tuple[int, str]]:
        return sorted(self._oversize, reverse=True)

    def directory_rank(self) -> np.ndarray:
        """For each directory number, its place among the directories in name order."""
        import numpy as np

        names = sorted(self._dir_ids.items())
        rank = np.empty(len(names), dtype=np.int64)
        rank[[number for _, number in names]] = np.arange(len(names))
        return rank


def plan(sizes: FileSizes, space: int, margin: float, oversize: Oversize = Oversize.FAIL) -> Plan:
    """Batches for the gathered files, which must have been gathered for this space and margin."""
    import numpy as np

    limit = check_space(space, margin)
    if sizes.limit != limit:
        raise ValueError("the sizes were gathered for another batch limit")
    if sizes.unknown_size:
        raise InvalidArgument(
            f"{sizes.unknown_size} file(s) have no size; cutting batches needs every size: "
            "give them in a manifest's size column (urls given alone carry none)"
        )
    size = np.frombuffer(sizes.sizes, dtype=np.int64) if sizes.sizes else np.zeros(0, np.int64)
    dirs = np.frombuffer(sizes.dirs, dtype=np.int64) if sizes.dirs else np.zeros(0, np.int64)
    if size.size and size.min() > limit:
        raise InvalidArgument(
            f"{size_text(space)} x margin {margin} = {size_text(limit)} per batch is smaller than "
            f"the smallest file ({size_text(int(size.min()))}): nothing would fit"
        )
    too_big = size > limit
    fitting = np.flatnonzero(~too_big)
    # Directories in name order, files in source order within each (a stable sort).
    order = fitting[np.argsort(sizes.directory_rank()[dirs[fitting]], kind="stable")]
    assignment = np.full(size.size, -1, dtype=np.int32)
    batches = _next_fit(size[order], dirs[order], limit, order, assignment)
    over = np.flatnonzero(too_big)
    if oversize == Oversize.OWN_BATCH:
        for position in over.tolist():
            assignment[position] = len(batches)
            batches.append(PlannedBatch(len(batches), 1, int(size[position]), 1, 0, True))
    return Plan(
        space=space,
        margin=margin,
        files=int(size.size),
        bytes=int(size.sum()),
        batches=batches,
        oversize_files=int(over.size),
        oversize_bytes=int(size[over].sum()),
        oversize_listed=sizes.largest_oversize(),
        oversize_policy=oversize,
        assignment=assignment,
    )


def check_space(space: int, margin: float) -> int:
    """The bytes one batch may hold, or InvalidArgument for a space or margin that makes none."""
    if space <= 0:
        raise InvalidArgument(f"space must be a positive size, not {size_text(space)}")
    if not 0 < margin <= 1:
        raise InvalidArgument(f"the safety margin must be in (0, 1], not {margin}")
    limit = capacity(space, margin)
    if limit <= 0:
        raise InvalidArgument(f"{size_text(space)} x margin {margin} leaves no room for any file")
    return limit


def _next_fit(
    size: np.ndarray, dirs: np.ndarray, limit: int, order: np.ndarray, assignment: np.ndarray
) -> list[PlannedBatch]:
    """Fill batches in order; sizes and dirs are sorted by directory, order maps them back."""
    import numpy as np

    if not size.size:
        return []
    starts = np.flatnonzero(np.r_[True, dirs[1:] != dirs[:-1]])
    totals = np.add.reduceat(size, starts)
    ends = np.r_[starts[1:], size.size]
    builder = _Batches(limit, size, order, assignment)
    for start, end, total in zip(starts.tolist(), ends.tolist(), totals.tolist(), strict=True):
        if total <= builder.room:
            builder.take(start, end, total)
        elif total <= limit and builder.room <= KEEP_TOGETHER_WASTE * limit:
            builder.close()
            builder.take(start, end, total)
        else:
            builder.split(start, end)
    builder.close()
    return builder.done


class _Batches:
    """The batch being filled, and those already closed."""

    def __init__(self, limit: int, size: np.ndarray, order: np.ndarray, assignment: np.ndarray):
        self.limit = limit
        self.size = size
        self.order = order
        self.assignment = assignment
        self.done: list[PlannedBatch] = []
        self._reset()

    def _reset(self) -> None:
        self.room = self.limit
        self.files = 0
        self.bytes = 0
        self.directories = 0
        self.split_directories = 0

    def take(self, start: int, end: int, total: int, split: bool = False) -> None:
        self.assignment[self.order[start:end]] = len(self.done)
        self.files += end - start
        self.bytes += total
        self.room -= total
        self.directories += 1
        self.split_directories += split

    def close(self) -> None:
        if self.files:
            self.done.append(
                PlannedBatch(
                    len(self.done), self.files, self.bytes, self.directories, self.split_directories
                )
            )
        self._reset()

    def split(self, start: int, end: int) -> None:
        """Spread one directory over as many batches as it needs, filling each in order."""
        import numpy as np

        running = np.cumsum(self.size[start:end])
        taken, base = 0, 0
        count = end - start
        while taken < count:
            # Files [taken, stop) fit in what the batch has left.
            stop = int(np.searchsorted(running, base + self.room, side="right"))
            if stop == taken:
                self.close()
                continue
            total = int(running[stop - 1]) - base
            self.take(start + taken, start + stop, total, split=stop < count or taken > 0)
            taken, base = stop, int(running[stop - 1])
            if taken < count:
                self.close()


@dataclass(frozen=True)
class Space:
    """The bytes one disk offers, and where that figure came from."""

    bytes: int
    source: str

    @classmethod
    def resolve(cls, space: int | str, dest: str) -> Space:
        """A given number of bytes, or `auto` measured on dest (file system work: a thread)."""
        return cls.measured(dest) if space == "auto" else cls(int(space), "given")

    @classmethod
    def measured(cls, dest: str) -> Space:
        """`auto`: the free space of dest's filesystem now."""
        if not dest:
            raise InvalidArgument("space 'auto' measures the free space of dest: give dest")
        path = Path(dest)
        if not path.is_absolute():
            raise InvalidArgument(f"dest must be an absolute path, not {dest!r}")
        if not path.is_dir():
            raise InvalidArgument(f"dest {dest} is not a directory; space 'auto' measures it")
        return cls(free_bytes(path), f"free space of {describe_disk(path)}")


def plan_source(source: Source, space: Space, margin: float, oversize: Oversize) -> Plan:
    """List the source (page by page, never whole) and plan it. Runs in a worker thread."""
    sizes = FileSizes(check_space(space.bytes, margin))
    return plan(sizes.add_pages(source_pages(source)), space.bytes, margin, oversize)
