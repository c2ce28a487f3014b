"""Disk batches of a download job: planned at submit, run one at a time, swapped by the operator.

A download submitted with `--space` is cut by the planner into batches that
each fit on one disk. The scheduler claims files of the active batch only.
When its last file is done the batch is verified (its manifest written onto
the disk), then complete; the next batch starts at once when it fits on the
disk now (or `--auto-proceed` was given), else the job waits in
`awaiting_swap` until `bfctl continue` (space was freed) or `bfctl swap` (the
disk was replaced). Every batch records the disk it went to.

Functions taking a connection run inside one writer operation.
"""

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.disks import Disk, free_bytes, identify
from bulkforge.daemon.downloader import machine as file_machine
from bulkforge.daemon.downloader.listing import Batching
from bulkforge.daemon.downloader.machine import FileState
from bulkforge.daemon.downloader.planner import FileSizes, Oversize, Plan, check_space, plan
from bulkforge.daemon.durable import disk_errors, fsync_or_die, replace_durably
from bulkforge.daemon.errors import FailedPrecondition
from bulkforge.daemon.failures import Failure
from bulkforge.daemon.machines import batch as batch_machine
from bulkforge.daemon.machines.batch import BatchState
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.store import guarded_update, guarded_update_each, now_ms
from bulkforge.proto.units import size_text

# Where a batch's manifest goes on its disk, below the job's dest.
MANIFEST_DIR = ".bulkforge"


@dataclass(frozen=True)
class BatchRow:
    id: int
    index: int
    state: BatchState
    files: int
    bytes: int
    disk: str


def manifest_path(dest: Path, job_name: str, index: int) -> Path:
    return dest / MANIFEST_DIR / f"{job_name}.batch-{index:04d}.jsonl"


# -- at submit -------------------------------------------------------------------------------


def plan_staged(conn: apsw.Connection, table: str, space: int, batching: Batching) -> Plan:
    """Plan the staged rows of a registration (in rowid order: the order files get ids)."""
    sizes = FileSizes(check_space(space, batching.margin))
    for path, size in conn.execute(f"SELECT path, size FROM temp.{table} ORDER BY rowid"):
        sizes.add(path, size)
    return plan(sizes, space, batching.margin, Oversize(batching.oversize))


def apply_plan(conn: apsw.Connection, job_id: int, planned: Plan) -> None:
    """Give the job's new files their batches, create the batch rows, settle oversize files."""
    (first_id,) = conn.execute("SELECT min(id) FROM files WHERE job_id = ?", (job_id,)).fetchone()
    conn.execute("DELETE FROM batches WHERE job_id = ?", (job_id,))
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS batch_of (id INTEGER PRIMARY KEY, idx INTEGER)")
    conn.execute("DELETE FROM temp.batch_of")
    assignment = planned.assignment.tolist()
    conn.executemany(
        "INSERT INTO temp.batch_of (id, idx) VALUES (?, ?)",
        enumerate(assignment, start=first_id),
    )
    conn.execute(
        "UPDATE files SET batch_idx = b.idx FROM temp.batch_of AS b "
        "WHERE files.id = b.id AND b.idx >= 0"
    )
    conn.execute("DROP TABLE temp.batch_of")
    stamp = now_ms()
    conn.executemany(
        "INSERT INTO batches (job_id, idx, state, files, bytes, updated_at) "
        "VALUES (?, ?, 'planned', ?, ?, ?)",
        [(job_id, b.index, b.files, b.bytes, stamp) for b in planned.batches],
    )
    oversize = [first_id + i for i, batch in enumerate(assignment) if batch < 0]
    _settle_oversize(conn, oversize, planned)


def _settle_oversize(conn: apsw.Connection, file_ids: list[int], planned: Plan) -> None:
    """Files no batch holds: failed (reason oversize) or skipped, as the operator chose."""
    if not file_ids:
        return
    stamp = now_ms()
    if planned.oversize_policy == Oversize.SKIP:
        columns: tuple[str, ...] = ("batch_idx", "finished_at", "updated_at")
        moves = [(FileState.SKIPPED, file_id, (-1, stamp, stamp)) for file_id in file_ids]
    else:
        message = (
            f"larger than a batch can hold ({size_text(planned.capacity)} = space x margin); "
            "submit with oversize 'own-batch' or 'skip', or a larger space"
        )
        columns = ("batch_idx", "step", "error_class", "error", "updated_at")
        failure = Failure("plan", "oversize", message, False)
        values = (-1, failure.step, failure.error_class, failure.message, stamp)
        moves = [(FileState.FAILED, file_id, values) for file_id in file_ids]
    guarded_update_each(
        conn, "files", FileState.PENDING, file_machine.check_transition, columns, moves
    )


# -- while running ---------------------------------------------------------------------------


def batch_rows(conn: apsw.Connection, job_id: int) -> list[BatchRow]:
    return [
        BatchRow(row[0], row[1], BatchState(row[2]), *row[3:])
        for row in conn.execute(
            "SELECT id, idx, state, files, bytes, disk FROM batches WHERE job_id = ? ORDER BY idx",
            (job_id,),
        )
    ]


def in_states(conn: apsw.Connection, job_id: int, states: tuple[BatchState, ...]) -> list[BatchRow]:
    """The job's batches in any of states, in index order."""
    return [b for b in batch_rows(conn, job_id) if b.state in states]


def move(conn: apsw.Connection, batch: BatchRow, new: BatchState, **columns) -> BatchRow:
    """The guarded move of one batch; returns the row as it is now."""
    guarded_update(
        conn,
        "batches",
        batch.id,
        batch.state,
        new,
        batch_machine.check_transition,
        updated_at=now_ms(),
        **columns,
    )
    return replace(batch, state=new, disk=columns.get("disk", batch.disk))


def activate(conn: apsw.Connection, batch: BatchRow, dest: Path) -> Disk:
    """Start a planned batch on the disk now mounted at dest, recording that disk."""
    disk = identify(dest)
    move(conn, batch, BatchState.ACTIVE, disk=disk.to_json(), started_at=now_ms())
    return disk


def reopen_retried(conn: apsw.Connection, job_id: int) -> None:
    """Complete batches that hold re-queued files become active again."""
    for batch in in_states(conn, job_id, (BatchState.COMPLETE,)):
        pending = conn.execute(
            "SELECT 1 FROM files WHERE job_id = ? AND batch_idx = ? AND state = 'pending' LIMIT 1",
            (job_id, batch.index),
        ).fetchone()
        if pending:
            move(conn, batch, BatchState.ACTIVE)


def open_work(conn: apsw.Connection, job_id: int, index: int) -> int:
    """Files of the batch still to fetch: pending, in flight, or failed and due for a retry."""
    (count,) = conn.execute(
        "SELECT count(*) FROM files WHERE job_id = ? AND batch_idx = ? AND "
        "(state IN ('pending', 'downloading', 'verifying') OR "
        "(state = 'failed' AND retry_at IS NOT NULL))",
        (job_id, index),
    ).fetchone()
    return count


def next_retry_at(conn: apsw.Connection, job_id: int, index: int) -> int | None:
    (due,) = conn.execute(
        "SELECT min(retry_at) FROM files WHERE job_id = ? AND batch_idx = ? "
        "AND state = 'failed' AND retry_at IS NOT NULL",
        (job_id, index),
    ).fetchone()
    return due


def fits_now(batch: BatchRow, dest: Path, margin: float) -> tuple[bool, int]:
    """Whether the batch fits in what dest's filesystem has free now (within the margin)."""
    free = free_bytes(dest)
    return batch.bytes <= free * margin, free


def margin_of(job: jobs.JobRow) -> float:
    """The share of a disk the job's batches may fill (1.0 for a job of one batch)."""
    batching = Batching.of_spec(json.loads(job.spec))
    return batching.margin if batching else 1.0


def require_room(batch: BatchRow, dest: Path, margin: float, verb: str, job_name: str) -> None:
    fits, free = fits_now(batch, dest, margin)
    if not fits:
        raise FailedPrecondition(
            f"cannot {verb} job {job_name!r}: batch {batch.index} needs {size_text(batch.bytes)} "
            f"and {dest} has {size_text(free)} free ({size_text(free * margin)} within the margin "
            f"{margin:g}); "
            "free space or put in a larger disk, then try again"
        )


def last_disk(conn: apsw.Connection, job_id: int) -> tuple[int, Disk] | None:
    """The disk of the latest batch that went to one."""
    for batch in reversed(batch_rows(conn, job_id)):
        if disk := Disk.from_json(batch.disk):
            return batch.index, disk
    return None


# -- the manifest a disk carries ---------------------------------------------------------------


def batch_files(conn: apsw.Connection, job_id: int, index: int) -> list[tuple]:
    """(path, size, sha256, md5) of each file the batch put on its disk, by path.

    The sha256 is the one bfd computed as it wrote the file; the manifest's own only for
    a file installed before bfd recorded what it saw (or skipped as already there).
    """
    return conn.execute(
        "SELECT path, size, COALESCE(seen_sha256, sha256), md5 FROM files "
        "WHERE job_id = ? AND batch_idx = ? AND state IN ('done', 'skipped') ORDER BY path",
        (job_id, index),
    ).fetchall()


def manifest_rows(conn: apsw.Connection, job_id: int, index: int) -> list[dict]:
    """What the batch put on its disk: path, size and sha256 of each file done or skipped."""
    rows = []
    for path, size, sha256, md5 in batch_files(conn, job_id, index):
        row = {"path": path, "size": size}
        if sha256:
            row["sha256"] = sha256
        elif md5:
            row["md5"] = md5
        rows.append(row)
    return rows


def manifest_header(job_name: str, batch: BatchRow, files: int) -> dict:
    """The first line of a batch's manifest. Its disk is a nested object (mount, device,
    fsid, fstype, uuid, label), so `jq .disk.uuid` reads it: never JSON inside a string.
    A free-text disk of an older store stays the text it was."""
    disk = Disk.from_json(batch.disk)
    shown: dict | str | None = asdict(disk) if disk is not None else (batch.disk or None)
    return {"job": job_name, "batch": batch.index, "disk": shown, "files": files}


def write_manifest(path: Path, header: dict, rows: list[dict]) -> None:
    """Write the manifest durably: a temp name, fsync, rename, fsync the directory.

    OSError: the disk would not take it (the job pauses, saying why); DiskFailed: the
    disk failed (EIO, read-only, an fsync), and its jobs are held.
    """
    temporary = path.with_name(path.name + ".tmp")
    with disk_errors(temporary):
        if not path.parent.is_dir():
            path.parent.mkdir()
            fsync_or_die(path.parent.parent)
        with temporary.open("w") as handle:
            handle.write(json.dumps(header, sort_keys=True) + "\n")
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True) + "\n")
    replace_durably(temporary, path)
    fsync_or_die(path.parent)
    logger.info("batch manifest {} written ({} files)", path, len(rows))


# -- the operator's verbs ------------------------------------------------------------------------


@dataclass
class Swapped:
    archived: list[int]
    disk: Disk
    new_disk: bool
    note: str


def continue_job(conn: apsw.Connection, name: str) -> None:
    """awaiting_swap -> running with the next batch on the disk at dest, if it has room."""
    job = jobs.get_job(conn, name)
    jobs.require_move(job, JobState.RUNNING, "continue", only_from=JobState.AWAITING_SWAP)
    _start_next(conn, job, "continue")


def swap(conn: apsw.Connection, name: str, dest: Path | None) -> Swapped:
    """The finished disk is gone: archive its batches, identify the new one, go on."""
    job = jobs.get_job(conn, name)
    jobs.require_move(job, JobState.RUNNING, "swap", only_from=JobState.AWAITING_SWAP)
    if dest is not None and str(dest) != job.dest:
        job = jobs.set_dest(conn, job, str(dest))
    archived = []
    for batch in in_states(conn, job.id, (BatchState.COMPLETE,)):
        move(conn, batch, BatchState.ARCHIVED)
        archived.append(batch.index)
    disk = identify(Path(job.dest))
    previous = last_disk(conn, job.id)
    new_disk = previous is None or previous[1].key != disk.key
    note = ""
    if not new_disk:
        assert previous is not None
        note = (
            f"{job.dest} is the same filesystem batch {previous[0]} went to "
            f"({disk.describe()}): emptied rather than swapped?"
        )
    _start_next(conn, job, "swap")
    logger.info(
        "job {}: swap archived batches {}; now {}{}",
        job.name,
        archived,
        disk.describe(),
        f" ({note})" if note else "",
    )
    return Swapped(archived, disk, new_disk, note)


def _start_next(conn: apsw.Connection, job: jobs.JobRow, verb: str) -> None:
    upcoming = in_states(conn, job.id, (BatchState.PLANNED,))
    if upcoming:
        require_room(upcoming[0], Path(job.dest), margin_of(job), verb, job.name)
        activate(conn, upcoming[0], Path(job.dest))
    jobs.move_job(conn, job, JobState.RUNNING, message="")
