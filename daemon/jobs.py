"""Job rows: creation, guarded transitions, and the read views the API serves.

Functions taking a connection run inside a writer operation (one transaction)
or a reader call; none of them opens its own transaction.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import apsw

from bulkforge.daemon.downloader.files import retrying_count
from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from bulkforge.daemon.machines import job as job_machine
from bulkforge.daemon.machines.file import FileState
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.machines.scene import SceneState
from bulkforge.daemon.scenes import records
from bulkforge.daemon.scenes.items import ItemChunk
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
    failures: int = 0
    started_at: int | None = None
    updated_at: int = 0


@dataclass
class JobView:
    job: JobRow
    counts: dict[str, int] = field(default_factory=dict)
    bytes_done: int = 0
    bytes_total: int = 0
    items_total: int = 0
    retrying: int = 0
    batches: list[BatchView] = field(default_factory=list)
    # An item (scenes) job's input registration; None for other kinds.
    registration: records.Registration | None = None


JOB_COLUMNS = "id, name, kind, state, spec, dest, message, created_at, updated_at"


def _job(row: tuple) -> JobRow:
    return JobRow(*row[:3], JobState(row[3]), *row[4:])


def find_job(conn: apsw.Connection, name: str) -> JobRow | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?", (name,)).fetchone()
    return _job(row) if row else None


def job_by_id(conn: apsw.Connection, job_id: int) -> JobRow | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
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
    """Register a job from entries in the caller's one transaction (stores built in place)."""
    table = "staged_inline"
    stage_open(conn, table)
    try:
        stage_rows(conn, table, entries)
        return create_staged_job(conn, name, spec, dest, table)
    finally:
        stage_drop(conn, table)


def existing_job(conn: apsw.Connection, name: str, spec: dict) -> JobRow | None:
    """The job of that name when its spec is the same; refused when it differs."""
    existing = find_job(conn, name)
    if existing is not None and existing.spec != canonical_spec(spec):
        raise AlreadyExists(
            f"a job named {name!r} already exists with other parameters; "
            "pick another name or cancel that job"
        )
    return existing


# Registration stages a job's rows in a TEMP table of the writer's connection,
# page by page, each page its own short transaction; one last transaction
# creates the job and moves the rows. A refused or crashed submit leaves nothing
# behind, a long listing never holds the writer, and no listing is held in memory.
STAGED_COLUMNS = "url, path, size, sha256, md5, etag, checksum_url"


def stage_open(conn: apsw.Connection, table: str) -> None:
    # on_disk: the size of the file already at dest/path when it was listed (NULL: none),
    # looked up by the listing's thread so the final transaction touches no file system.
    conn.execute(
        f"CREATE TEMP TABLE {table} (url TEXT NOT NULL, path TEXT NOT NULL, size INTEGER, "
        "sha256 TEXT, md5 TEXT, etag TEXT, checksum_url TEXT, on_disk INTEGER)"
    )


def stage_rows(
    conn: apsw.Connection,
    table: str,
    entries: Iterable[FileEntry],
    on_disk: Iterable[int | None] | None = None,
) -> None:
    entries = list(entries)
    sizes = list(on_disk) if on_disk is not None else [None] * len(entries)
    conn.executemany(
        f"INSERT INTO temp.{table} ({STAGED_COLUMNS}, on_disk) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (e.url, e.path, e.size, e.sha256, e.md5, e.etag, e.checksum_url, size)
            for e, size in zip(entries, sizes, strict=True)
        ],
    )


def stage_drop(conn: apsw.Connection, table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")


def create_staged_job(
    conn: apsw.Connection, name: str, spec: dict, dest: str, table: str
) -> tuple[JobRow, bool]:
    """Create the job from its staged rows in one transaction; idempotent by name."""
    existing = existing_job(conn, name, spec)
    if existing is not None:
        return existing, False
    duplicate = conn.execute(
        f"SELECT path FROM temp.{table} GROUP BY path HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    if duplicate:
        raise InvalidArgument(
            f"two entries would both be written to {duplicate[0]!r}; give them distinct paths"
        )
    files, total = conn.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM temp.{table}"
    ).fetchone()
    if not files:
        raise InvalidArgument("the source lists no files")
    stamp = now_ms()
    job_id = insert_job(conn, name, "download", spec, dest)
    conn.execute(
        f"INSERT INTO files (job_id, {STAGED_COLUMNS}, updated_at) "
        f"SELECT ?, {STAGED_COLUMNS}, ? FROM temp.{table} ORDER BY rowid",
        (job_id, stamp),
    )
    conn.execute(
        "INSERT INTO batches (job_id, idx, state, files, bytes, updated_at) "
        "VALUES (?, 0, 'planned', ?, ?, ?)",
        (job_id, files, total, stamp),
    )
    return get_job(conn, name), True


def insert_job(conn: apsw.Connection, name: str, kind: str, spec: dict, dest: str) -> int:
    """A new queued job row; returns its id."""
    stamp = now_ms()
    conn.execute(
        "INSERT INTO jobs (name, kind, state, spec, dest, created_at, updated_at) "
        "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
        (name, kind, canonical_spec(spec), dest, stamp, stamp),
    )
    return conn.last_insert_rowid()


def create_scenes_job(
    conn: apsw.Connection,
    name: str,
    spec: dict,
    dest: str,
    rows_total: int,
    first: ItemChunk | None,
) -> tuple[JobRow, bool]:
    """A scenes job with its first chunk of items; the rest is registered as it runs."""
    existing = existing_job(conn, name, spec)
    if existing is not None:
        return existing, False
    # Shards are numbered per job: two jobs in one directory would overwrite each other's.
    other = conn.execute(
        "SELECT name FROM jobs WHERE kind = 'scenes' AND dest = ? LIMIT 1", (dest,)
    ).fetchone()
    if other:
        raise InvalidArgument(
            f"--dest {dest} holds the shards of scenes job {other[0]!r}; give each scenes job "
            "a directory of its own"
        )
    job_id = insert_job(conn, name, "scenes", spec, dest)
    records.open_registration(conn, job_id, rows_total)
    if first is not None:
        records.register_chunk(conn, job_id, first, 0)
    return get_job(conn, name), True


def move_job(
    conn: apsw.Connection, job: JobRow, new: JobState, message: str | None = None
) -> JobRow:
    """Guarded transition of a job row; message None keeps the current one."""
    columns: dict = {"updated_at": now_ms()}
    if message is not None:
        columns["message"] = message
    guarded_update(conn, "jobs", job.id, job.state, new, job_machine.check_transition, **columns)
    return get_job(conn, job.name)


def set_message(conn: apsw.Connection, job: JobRow, message: str) -> None:
    """Say why the job is where it is, without moving it."""
    conn.execute(
        "UPDATE jobs SET message = ?, updated_at = ? WHERE id = ?", (message, now_ms(), job.id)
    )


def set_dest(conn: apsw.Connection, job: JobRow, dest: str) -> JobRow:
    """Where the job's next files land (a swap onto a disk mounted elsewhere)."""
    conn.execute("UPDATE jobs SET dest = ?, updated_at = ? WHERE id = ?", (dest, now_ms(), job.id))
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
    if job.kind == "scenes":
        _scene_counts(conn, view)
    else:
        _file_counts(conn, view)
    view.batches = [
        BatchView(*row)
        for row in conn.execute(
            "SELECT idx, state, files, bytes, disk, failures, started_at, updated_at "
            "FROM batches WHERE job_id = ? ORDER BY idx",
            (job.id,),
        )
    ]
    return view


def _file_counts(conn: apsw.Connection, view: JobView) -> None:
    for state, files, size in conn.execute(
        "SELECT state, files, bytes FROM file_counts WHERE job_id = ? AND files > 0",
        (view.job.id,),
    ):
        view.counts[state] = files
        view.items_total += files
        view.bytes_total += size
        if state in (FileState.DONE, FileState.SKIPPED):
            view.bytes_done += size
    view.retrying = retrying_count(conn, view.job.id)


def _scene_counts(conn: apsw.Connection, view: JobView) -> None:
    """Items by state; the total counts rows not yet registered, minus those skipped."""
    for state, (items, size) in records.counts(conn, view.job.id).items():
        view.counts[state] = items
        if state == SceneState.DONE:
            view.bytes_done = view.bytes_total = size
    view.registration = records.registration(conn, view.job.id)
    if view.registration is not None:
        view.items_total = view.registration.rows_total - view.registration.rejected
