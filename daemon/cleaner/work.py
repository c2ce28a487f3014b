"""What a series' cleaning takes and gives back: plain data between bfd and a worker.

Kept apart from series.py so that bfd, which only builds tasks and reads results,
never imports what the cleaning itself needs (pyarrow, numpy).
"""

from dataclasses import dataclass, field
from pathlib import Path

# Without a memory cap, the most a task inflates of one zip's CSV.
MAX_INFLATED = 4 * 1024**3
# A task holds about four times its CSV at its peak (the bytes, the rows read as text or
# typed, normalised, split by day): its bound under a cap is a quarter of a worker's share.
PEAK_FACTOR = 4


def inflate_limit(memory_cap: int, workers: int) -> int:
    """The bytes one task may inflate of a zip: a quarter of the cap's share per worker."""
    if not memory_cap:
        return MAX_INFLATED
    return max(1, min(MAX_INFLATED, memory_cap // max(1, workers) // PEAK_FACTOR))


@dataclass(frozen=True)
class ZipInput:
    id: int
    # Relative to the layout root: the name a partition's stats list it by.
    path: str
    root: str
    size: int
    mtime_ns: int
    # Its sha256 when known for that size and mtime (verified by a download, or cleaned).
    sha256: str | None
    # Claimed by this task: the task's outcome for it is committed.
    home: bool

    @property
    def file(self) -> Path:
        return Path(self.root) / self.path


@dataclass(frozen=True)
class SeriesTask:
    dest: str
    series: str
    zips: tuple[ZipInput, ...]
    # Days recorded in the store as built with no rows: day (ISO) -> digest.
    empty: dict[str, str] = field(default_factory=dict)
    # The bytes a zip's CSV may inflate to (inflate_limit): past it the zip fails, `memory`.
    inflate_limit: int = MAX_INFLATED


@dataclass
class ZipOutcome:
    sha256: str | None = None
    size: int = 0
    mtime_ns: int = 0
    rows_in: int | None = None
    rejected: dict[str, int] | None = None
    # (step, error class, message) when it could not be used.
    failure: tuple[str, str, str] | None = None


@dataclass
class SeriesResult:
    zips: dict[int, ZipOutcome]
    # Days built this time: day (ISO) -> (digest, rows written; 0 means no file).
    built: dict[str, tuple[str, int]] = field(default_factory=dict)
    parsed: int = 0
    rows_out: int = 0
