"""Job rows: creation, guarded transitions, and the read views the API serves.

Functions taking a connection run inside a writer operation (one transaction)
or a reader call; none of them opens its own transaction.
"""

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import apsw
from loguru import logger

from bulkforge.daemon.errors import AlreadyExists, FailedPrecondition, NotFound
from bulkforge.daemon.machines import Tone
from bulkforge.daemon.machines import batch as batch_machine
from bulkforge.daemon.machines import job as job_machine
from bulkforge.daemon.machines.batch import BatchState
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.store import guarded_update, guarded_update_where, now_ms


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


@dataclass(frozen=True)
class Registration:
    """How far a job's input has been read into the store (kinds that register as they run)."""

    rows_total: int
    rows_read: int
    done: bool
    rejected: int
    first_rejected: str


@dataclass(frozen=True)
class TableProgress:
    """One table of a job that writes tables: rows and parts done, and its recent rate."""

    name: str
    rows_done: int
    rows_total: int
    parts_done: int
    parts_total: int
    rows_per_s: float


@dataclass
class JobView:
    job: JobRow
    counts: dict[str, int] = field(default_factory=dict)
    bytes_done: int = 0
    bytes_total: int = 0
    # Whether bytes_total is the whole (every size known up front), not a sum so far.
    bytes_total_known: bool = False
    items_total: int = 0
    retrying: int = 0
    batches: list[BatchView] = field(default_factory=list)
    # The input's registration, for kinds that register as they run; else None.
    registration: Registration | None = None
    # What its batch rows are: "disk" batches or item "shard"s (its kind says).
    batch_unit: str = ""
    # What its items are, plural: "files", "items", "zips" or "parts" (its kind says).
    item_unit: str = "items"
    # Its item machine's states in the order they happen, each with its tone.
    item_tones: dict[str, Tone] = field(default_factory=dict)
    # A job that writes tables: each table's progress.
    tables: list[TableProgress] = field(default_factory=list)
    # When it was read from the store (unix seconds): `status` shares a view for a moment.
    read_at: float = 0.0

    # The derived numbers, defined here once: `status`, `watch` and `stats` carry them.
    @property
    def succeeded(self) -> int:
        """Items that ended well (done, or skipped because already in place)."""
        return self._in_tone(Tone.OK)

    @property
    def failed(self) -> int:
        return self._in_tone(Tone.BAD)

    @property
    def finished(self) -> int:
        """Items that ended, well or not: what rates and the ETA count."""
        return self.succeeded + self.failed

    def ordered_counts(self) -> list[tuple[str, int, Tone]]:
        """(state, items, tone) in the machine's order; states without items left out."""
        known = [(s, self.counts[s], t) for s, t in self.item_tones.items() if s in self.counts]
        others = [
            (s, n, Tone.IDLE) for s, n in sorted(self.counts.items()) if s not in self.item_tones
        ]
        return known + others

    def _in_tone(self, tone: Tone) -> int:
        return sum(n for s, n in self.counts.items() if self.item_tones.get(s) == tone)


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


def jobs_in_states(
    conn: apsw.Connection, states: Iterable[JobState], kind: str | None = None
) -> list[JobRow]:
    """Jobs in any of the states, oldest first; only those of one kind when it is given."""
    wanted = [str(state) for state in states]
    query = f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({','.join('?' * len(wanted))})"
    if kind is not None:
        query += " AND kind = ?"
        wanted.append(kind)
    cursor = conn.execute(query + " ORDER BY id", wanted)
    return [_job(row) for row in cursor]


def all_jobs(conn: apsw.Connection) -> list[JobRow]:
    return [_job(row) for row in conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY id")]


def canonical_spec(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def existing_job(conn: apsw.Connection, name: str, spec: dict) -> JobRow | None:
    """The job of that name when its spec is the same; refused when it differs."""
    existing = find_job(conn, name)
    if existing is not None and existing.spec != canonical_spec(spec):
        raise AlreadyExists(
            f"a job named {name!r} already exists with other parameters; "
            f"pick another name, or free this one with `bfctl remove {name}` once that job "
            f"has ended (`bfctl cancel {name}` ends it)"
        )
    return existing


def insert_job(conn: apsw.Connection, name: str, kind: str, spec: dict, dest: str) -> int:
    """A new queued job row; returns its id."""
    stamp = now_ms()
    conn.execute(
        "INSERT INTO jobs (name, kind, state, spec, dest, created_at, updated_at) "
        "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
        (name, kind, canonical_spec(spec), dest, stamp, stamp),
    )
    return conn.last_insert_rowid()


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
    raise refusal(job, verb)


def end_batches(conn: apsw.Connection, job: JobRow) -> int:
    """A cancelled job's unfinished batches (disk batches, shards) end with it, so none of
    them says active in status or in the store; how many moved."""
    stamp = now_ms()
    return sum(
        guarded_update_where(
            conn,
            "batches",
            state,
            BatchState.CANCELLED,
            batch_machine.check_transition,
            "job_id = ?",
            (job.id,),
            updated_at=stamp,
        )
        for state in batch_machine.UNFINISHED
    )


def refusal(job: JobRow, verb: str) -> FailedPrecondition:
    """Why `verb` cannot be done to the job in its state, and what can: the one advice per
    state, whichever verb was refused (resume and retry of a cancelled job say the same)."""
    # Each hint names only commands that work in that state (a test runs them).
    name = job.name
    hints = {
        JobState.COMPLETED: f"it has completed; `bfctl remove {name}` forgets it",
        JobState.CANCELLED: f"it was cancelled and cannot go on; `bfctl remove {name}` forgets "
        "it and frees its name for a new submit",
        JobState.FAILED: f"it has failed; `bfctl retry {name}` re-queues its failures, "
        f"`bfctl remove {name}` forgets it",
        JobState.PAUSED: f"it is paused; `bfctl resume {name}` continues it",
        JobState.QUEUED: "it has not started yet",
        JobState.RUNNING: "it is running",
        JobState.AWAITING_SWAP: f"it waits for a disk swap; `bfctl swap {name}` once the next "
        f"disk is in, or `bfctl continue {name}` once this one has room",
    }
    return FailedPrecondition(f"cannot {verb} job {name!r}: {hints[job.state]}")


def job_view(conn: apsw.Connection, job: JobRow) -> JobView:
    """The kind-neutral part of a job's view: the row and its batches; the kind adds counts."""
    view = JobView(job=job)
    view.batches = [
        BatchView(*row)
        for row in conn.execute(
            "SELECT idx, state, files, bytes, disk, failures, started_at, updated_at "
            "FROM batches WHERE job_id = ? ORDER BY idx",
            (job.id,),
        )
    ]
    return view


def start_job(conn: apsw.Connection, job: JobRow) -> JobRow:
    """A queued job a runner takes up: running, its message cleared."""
    job = move_job(conn, job, JobState.RUNNING, message="")
    logger.info("job {} started", job.name)
    return job


def log_about(job: JobRow):
    """The logger for a line about job: its name and kind travel as fields (in JSON logs)."""
    return logger.bind(job=job.name, kind=job.kind)


@contextlib.contextmanager
def working_on(job: JobRow) -> Iterator[None]:
    """Every log line inside, and in the tasks started inside, carries job and kind."""
    with logger.contextualize(job=job.name, kind=job.kind):
        yield


def fail_live_job(conn: apsw.Connection, job_id: int, message: str) -> None:
    """Fail a queued or running job for a reason of its own (its input is unreadable …)."""
    job = job_by_id(conn, job_id)
    if job is None or job.state not in (JobState.QUEUED, JobState.RUNNING):
        return
    if job.state == JobState.QUEUED:
        job = move_job(conn, job, JobState.RUNNING)
    move_job(conn, job, JobState.FAILED, message=message)
    log_about(job).error("job {} failed: {}", job.name, message)


def repair_running(
    conn: apsw.Connection, table: str, moves: tuple[StrEnum, StrEnum, Callable]
) -> list[tuple[str, int]]:
    """Boot repair of an item table: rows a crash left running back to pending.

    moves is (running, pending, the machine's check); answers (job name, rows) per job.
    """
    running, pending, check = moves
    counts = conn.execute(
        f"SELECT jobs.name, count(*) FROM {table} AS items JOIN jobs ON jobs.id = items.job_id "
        "WHERE items.state = ? GROUP BY jobs.name",
        (str(running),),
    ).fetchall()
    guarded_update_where(
        conn,
        table,
        running,
        pending,
        check,
        "1",
        expected=sum(count for _, count in counts),
        updated_at=now_ms(),
    )
    return counts


def remove_job(conn: apsw.Connection, job: JobRow) -> None:
    """Delete the job's row and every row that belongs to it, children before parents.

    Kind-neutral: the rows are found through the schema (every table with a job_id, and
    the tables whose foreign keys point into those), so a kind's new table needs nothing
    here.
    """
    for table, where in _owned_tables(conn):
        conn.execute(f"DELETE FROM {table} WHERE {where}", {"job": job.id})
    conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))


def _owned_tables(conn: apsw.Connection) -> list[tuple[str, str]]:
    """(table, WHERE for the job's rows) in an order that deletes children first."""
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    # table -> [(parent table, our column, its key)]
    parents = {
        name: [
            (fk[2], fk[3], fk[4] or "id") for fk in conn.execute(f"PRAGMA foreign_key_list({name})")
        ]
        for name in names
    }
    where = {
        name: "job_id = :job"
        for name in names
        if name != "jobs"
        and "job_id" in {col[1] for col in conn.execute(f"PRAGMA table_info({name})")}
    }
    for name in names:  # one level below them: the segments of files
        for parent, column, key in parents[name]:
            if name not in where and parent in where:
                where[name] = f"{column} IN (SELECT {key} FROM {parent} WHERE job_id = :job)"
    ordered: list[str] = []
    while len(ordered) < len(where):
        ready = [
            name
            for name in where
            if name not in ordered
            and not any(
                parent == name
                for child in where
                if child not in ordered and child != name
                for parent, _, _ in parents[child]
            )
        ]
        if not ready:
            raise RuntimeError("the schema's foreign keys among job tables form a cycle")
        ordered += ready
    return [(name, where[name]) for name in ordered]
