"""A dry run of a source: what it holds, by extension and top-level directory, and its largest.

Aggregates only: a listing of millions of files is summarised, never held.
"""

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from bulkforge.daemon.downloader.manifest import FileEntry

# Oversize files an analysis names (all are counted).
OVERSIZE_LISTED = 100


@dataclass
class Group:
    files: int = 0
    bytes: int = 0

    def add(self, size: int | None) -> None:
        self.files += 1
        self.bytes += size or 0


@dataclass
class Analysis:
    files: int = 0
    bytes: int = 0
    unknown_size: int = 0
    with_checksum: int = 0
    by_extension: dict[str, Group] = field(default_factory=lambda: defaultdict(Group))
    by_top_dir: dict[str, Group] = field(default_factory=lambda: defaultdict(Group))
    largest: list[tuple[int, str]] = field(default_factory=list)
    # Files larger than one batch may hold (when a batch limit was given).
    oversize_files: int = 0
    oversize_bytes: int = 0
    oversize: list[tuple[int, str]] = field(default_factory=list)


def analyze(
    pages: Iterable[list[FileEntry]], largest: int = 10, batch_limit: int | None = None
) -> Analysis:
    summary = Analysis()
    for page in pages:
        for entry in page:
            _add(summary, entry, largest)
            if batch_limit is not None and (entry.size or 0) > batch_limit:
                summary.oversize_files += 1
                summary.oversize_bytes += entry.size or 0
                _keep_largest(summary.oversize, (entry.size or 0, entry.path), OVERSIZE_LISTED)
    summary.largest.sort(reverse=True)
    summary.oversize.sort(reverse=True)
    return summary


def _add(summary: Analysis, entry: FileEntry, largest: int) -> None:
    path = PurePosixPath(entry.path)
    summary.files += 1
    summary.bytes += entry.size or 0
    summary.unknown_size += entry.size is None
    summary.with_checksum += bool(entry.sha256 or entry.md5 or entry.checksum_url)
    summary.by_extension[path.suffix.lower() or "(none)"].add(entry.size)
    top = path.parts[0] + "/" if len(path.parts) > 1 else "(top level)"
    summary.by_top_dir[top].add(entry.size)
    if entry.size is not None:
        _keep_largest(summary.largest, (entry.size, entry.path), largest)


def _keep_largest(heap: list[tuple[int, str]], item: tuple[int, str], keep: int) -> None:
    """heap holds the `keep` largest items seen (a min-heap)."""
    if len(heap) < keep:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)
