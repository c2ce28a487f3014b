"""Job rows: creation, guarded transitions, and the read views the API serves.

Functions taking a connection run inside a writer operation (one transaction)
or a reader call; none of them opens its own transaction.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import apsw

from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from bulkforge.daemon.machines import job as job_machine
from bulkforge.daemon.machines.file import FileState
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.store import guarded_update, now_ms

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


@dataclass(frozen=True)
class JobRow:
    id: int
    name: str
    kind: str
    state: JobState
    spec: str
    dest: str
    message: str
    created_at: int
    updated_at: int


@dataclass
class BatchView:
    index: int
    state: str
    files: int
    bytes: int
    disk: str


@dataclass
class JobView:
    job: JobRow
    counts: dict[str, int] = field(default_factory=dict)
    bytes_done: int = 0
    bytes_total: int = 0
    items_total: int = 0
    retrying: int = 0
    batches: list[BatchView] = field(default_factory=list)


JOB_COLUMNS = "id, name, kind, state, spec, dest, message, created_at, updated_at"


def _job(row: tuple) -> JobRow:
    return JobRow(*row[:3], JobState(row[3]), *row[4:])


def find_job(conn: apsw.Connection, name: str) -> JobRow | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?", (name,)).fetchone()
    return _job(row) if row else None


def get_job(conn: apsw.Connection, name: str) -> JobRow:
    job = find_job(conn, name)
    if job is None:
        raise NotFound(f"no job named {name!r} (bfctl list shows the jobs)")
    return job


def jobs_in_states(conn: apsw.Connection, states: Iterable[JobState]) -> list[JobRow]:
    wanted = [str(state) for state in states]
    marks = ",".join("?" * len(wanted))
    cursor = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY id", wanted
    )
    return [_job(row) for row in cursor]


def all_jobs(conn: apsw.Connection) -> list[JobRow]:
    return [_job(row) for row in conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY id")]


def canonical_spec(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def create_download_job(
    conn: apsw.Connection, name: str, spec: dict, dest: str, entries: Iterable[FileEntry]
) -> tuple[JobRow, bool]:
    """Insert the job and all its file rows in one transaction; idempotent by name.

    Returns the job and whether it was created. The same name with the same
    spec returns the existing job; with another spec it is refused.
    """
    spec_text = canonical_spec(spec)
    existing = find_job(conn, name)
    if existing is not None:
        if existing.spec != spec_text:
            raise AlreadyExists(
                f"a job named {name!r} already exists with other parameters; "
                "pick another name or cancel that job"
            )
        return existing, False
    stamp = now_ms()
    conn.execute(
        "INSERT INTO jobs (name, kind, state, spec, dest, created_at, updated_at) "
        "VALUES (?, 'download', 'queued', ?, ?, ?, ?)",
        (name, spec_text, dest, stamp, stamp),
    )
    job_id = conn.last_insert_rowid()
    files, total = _insert_files(conn, job_id, entries, stamp)
    conn.execute(
        "INSERT INTO batches (job_id, idx, state, files, bytes, updated_at) "
        "VALUES (?, 0, 'planned', ?, ?, ?)",
        (job_id, files, total, stamp),
    )
    return get_job(conn, name), True


def _insert_files(
    conn: apsw.Connection, job_id: int, entries: Iterable[FileEntry], stamp: int
) -> tuple[int, int]:
    files = total = 0
    insert = (
        "INSERT INTO files (job_id, url, path, size, sha256, md5, etag, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for entry in entries:
        try:
            conn.execute(
                insert,
                (
                    job_id,
                    entry.url,
                    entry.path,
                    entry.size,
                    entry.sha256,
                    entry.md5,
                    entry.etag,
                    stamp,
                ),
            )
        except apsw.ConstraintError:
            raise InvalidArgument(
                f"two entries would both be written to {entry.path!r}; give them distinct paths"
            ) from None
        files += 1
        total += entry.size or 0
    return files, total


def move_job(
    conn: apsw.Connection, job: JobRow, new: JobState, message: str | None = None
) -> JobRow:
    """Guarded transition of a job row; message None keeps the current one."""
    columns: dict = {"updated_at": now_ms()}
    if message is not None:
        columns["message"] = message
    guarded_update(conn, "jobs", job.id, job.state, new, job_machine.check_transition, **columns)
    return get_job(conn, job.name)


def require_move(job: JobRow, new: JobState, verb: str, only_from: JobState | None = None) -> None:
    """Refuse an operator's verb the job machine (or the verb) does not allow, saying why."""
    if (job.state, new) in job_machine.MOVES and only_from in (None, job.state):
        return
    hints = {
        JobState.COMPLETED: "it has completed; nothing is left to do",
        JobState.CANCELLED: "it was cancelled; submit it again under a new name",
        JobState.FAILED: "it has failed; `bfctl retry` re-queues its failures",
        JobState.PAUSED: "it is paused; `bfctl resume` continues it",
        JobState.QUEUED: "it has not started yet",
        JobState.RUNNING: "it is running",
        JobState.AWAITING_SWAP: "it waits for a disk swap; `bfctl swap` or `bfctl continue`",
    }
    raise FailedPrecondition(f"cannot {verb} job {job.name!r}: {hints[job.state]}")


def job_view(conn: apsw.Connection, job: JobRow) -> JobView:
    view = JobView(job=job)
    for state, files, size in conn.execute(
        "SELECT state, files, bytes FROM file_counts WHERE job_id = ? AND files > 0", (job.id,)
    ):
        view.counts[state] = files
        view.items_total += files
        view.bytes_total += size
        if state in (FileState.DONE, FileState.SKIPPED):
            view.bytes_done += size
    (view.retrying,) = conn.execute(
        "SELECT count(*) FROM files WHERE job_id = ? AND state = 'failed' AND retry_at IS NOT NULL",
        (job.id,),
    ).fetchone()
    view.batches = [
        BatchView(*row)
        for row in conn.execute(
            "SELECT idx, state, files, bytes, disk FROM batches WHERE job_id = ? ORDER BY idx",
            (job.id,),
        )
    ]
    return view
