"""bfctl verify: re-hash a batch's files on whatever disk is mounted at the job's dest.

The store knows every file of every batch (path, size, checksum) and the disk
each batch went to. Verify reads the files back from the disk mounted now and
reports those missing, those changed (size or checksum), and files on the disk
that no batch of the job put there. Nothing is changed, in the store or on disk.
"""

import hashlib
import os
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.disks import Disk
from bulkforge.daemon.downloader.batches import MANIFEST_DIR, batch_files, batch_rows
from bulkforge.daemon.downloader.paths import PARTIAL_SUFFIX
from bulkforge.daemon.errors import FailedPrecondition, InvalidArgument
from bulkforge.proto.units import sizes_apart

HASH_BLOCK = 1024 * 1024
# How many paths of each kind one answer names (all are counted).
LISTED = 1000
# Files one worker task re-hashes.
CHUNK_FILES = 256


@dataclass(frozen=True)
class Expected:
    path: str
    size: int | None
    sha256: str | None
    md5: str | None


@dataclass
class BatchCheck:
    index: int
    went_to: Disk | None
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    missing_count: int = 0
    changed_count: int = 0


@dataclass
class Verification:
    dest: str
    mounted: Disk
    batches: list[BatchCheck]
    # Files on the disk that no batch of the job put there.
    extra: list[str]
    extra_count: int

    @property
    def ok(self) -> bool:
        problems = sum(b.missing_count + b.changed_count for b in self.batches)
        return not (problems or self.extra_count)


@dataclass(frozen=True)
class _Wanted:
    job: jobs.JobRow
    # Batch index -> (its disk, its files); the batches to check.
    batches: dict[int, tuple[Disk | None, list[Expected]]]
    # Paths of the job's files on the mounted disk: anything else there is extra.
    known: frozenset[str]


def read_wanted(conn: apsw.Connection, name: str, batch: int | None, mounted: Disk) -> _Wanted:
    """What the store says should be on the disk mounted now (one reader transaction)."""
    job = jobs.get_job(conn, name)
    rows = batch_rows(conn, job.id)
    if batch is not None and batch not in {b.index for b in rows}:
        raise InvalidArgument(f"job {name!r} has no batch {batch} (it has 0..{len(rows) - 1})")
    on_this_disk = [b for b in rows if (d := Disk.from_json(b.disk)) and d.key == mounted.key]
    if batch is None:
        if not on_this_disk:
            raise FailedPrecondition(
                f"no batch of job {name!r} went to the disk mounted at {job.dest} "
                f"({mounted.describe()}); name one with batch K"
            )
        wanted = on_this_disk
    else:
        wanted = [b for b in rows if b.index == batch]
    batches = {b.index: (Disk.from_json(b.disk), _expected(conn, job.id, b.index)) for b in wanted}
    known = {e.path for _, files in batches.values() for e in files}
    for other in on_this_disk:
        if other.index not in batches:
            known |= {e.path for e in _expected(conn, job.id, other.index)}
    return _Wanted(job, batches, frozenset(known))


def _expected(conn: apsw.Connection, job_id: int, index: int) -> list[Expected]:
    return [Expected(*row) for row in batch_files(conn, job_id, index)]


def check(wanted: _Wanted, mounted: Disk, workers: Executor) -> Verification:
    """Re-hash every wanted file under the job's dest, in the CPU worker processes.

    Runs in a thread of the daemon; the hashing itself is spread over `workers`.
    """
    dest = Path(wanted.job.dest)
    if not dest.is_dir():
        raise FailedPrecondition(f"{dest} is not there (is the disk mounted?)")
    checks = []
    for index, (went_to, files) in sorted(wanted.batches.items()):
        result = BatchCheck(index, went_to)
        chunks = [files[i : i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
        for found in workers.map(problems_in, [str(dest)] * len(chunks), chunks):
            for path, problem in found:
                _count(result, path, problem)
        checks.append(result)
    extra = sorted(_extra_files(dest, wanted.known))
    return Verification(str(dest), mounted, checks, extra[:LISTED], len(extra))


def problems_in(dest: str, files: list[Expected]) -> list[tuple[str, str | None]]:
    """(path, None: missing | its problem) for each file not as expected. In a worker."""
    found = []
    for expected in files:
        try:
            problem = _problem(Path(dest) / expected.path, expected)
        except FileNotFoundError:
            found.append((expected.path, None))
            continue
        except OSError as exc:
            problem = f"unreadable: {exc.strerror}"
        found.append((expected.path, problem))
    return found


def _count(result: BatchCheck, path: str, problem: str | None) -> None:
    result.checked += 1
    if problem is None:
        result.missing_count += 1
        if len(result.missing) < LISTED:
            result.missing.append(path)
    elif problem:
        result.changed_count += 1
        if len(result.changed) < LISTED:
            result.changed.append((path, problem))


def _problem(path: Path, expected: Expected) -> str:
    """Why the file is not what the batch put there, or '' when it is."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        found, wanted = sizes_apart(size, expected.size)
        return f"size {found}, expected {wanted}"
    if expected.sha256:
        kind, want, hasher = "sha256", expected.sha256, hashlib.sha256()
    elif expected.md5:
        kind, want, hasher = "md5", expected.md5, hashlib.md5()
    else:
        return ""
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            hasher.update(block)
    got = hasher.hexdigest()
    return "" if got == want else f"{kind} {got}, expected {want}"


def _extra_files(dest: Path, known: frozenset[str]) -> list[str]:
    """Files under dest that no batch on this disk put there (manifests and partials aside)."""
    extra = []
    for root, dirs, names in os.walk(dest):
        here = Path(root)
        if here == dest and MANIFEST_DIR in dirs:
            dirs.remove(MANIFEST_DIR)
        for name in names:
            relative = str((here / name).relative_to(dest))
            if not name.endswith(PARTIAL_SUFFIX) and relative not in known:
                extra.append(relative)
    return extra
