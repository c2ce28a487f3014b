"""Clean rows: the job, its zips (scanned, claimed by series, finished), partitions, reads.

Every function takes a connection and runs inside a writer operation or a
reader call. A series is claimed by moving its pending zips to `running`; its
worker's outcome moves them to `done` or `failed` in the same transaction that
records the partitions it built, which happens only once those are durable.
"""

import json
from dataclasses import dataclass

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.cleaner import machine as zip_machine
from bulkforge.daemon.cleaner.machine import ZipState
from bulkforge.daemon.cleaner.scan import Found, Scan
from bulkforge.daemon.cleaner.work import SeriesResult, ZipInput
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.item_table import ItemTable
from bulkforge.daemon.machines.job import LIVE, JobState
from bulkforge.daemon.store import guarded_update_each, guarded_update_where, now_ms

KIND = "clean"
S = ZipState
MACHINE = zip_machine.check_transition
# Zips are named by their path, in path order.
ITEMS = ItemTable("clean_zips", S, MACHINE, label="path", listed_by="path")
# A zip failed at one of these steps is unusable as it is: no partition is built from it.
UNUSABLE_STEPS = ("open", "parse", "schema")


@dataclass(frozen=True)
class Inputs:
    outside: int
    first_outside: str
    filtered: int
    seen_file_id: int


@dataclass(frozen=True)
class Claimed:
    series: str
    zips: list[ZipInput]

    @property
    def home(self) -> list[int]:
        return [z.id for z in self.zips if z.home]


# -- the job -----------------------------------------------------------------------------------


def create_job(conn: apsw.Connection, name: str, spec: dict, dest: str) -> tuple[jobs.JobRow, bool]:
    """A clean job; its zips are registered when it starts (and each time it is resumed)."""
    existing = jobs.existing_job(conn, name, spec)
    if existing is not None:
        return existing, False
    refuse_shared_dest(conn, dest, name)
    job_id = jobs.insert_job(conn, name, KIND, spec, dest)
    conn.execute("INSERT INTO clean_inputs (job_id) VALUES (?)", (job_id,))
    return jobs.get_job(conn, name), True


def refuse_shared_dest(conn: apsw.Connection, dest: str, name: str) -> None:
    """Two live clean jobs into one dest would rebuild the same partitions at once."""
    states = sorted(LIVE)
    other = conn.execute(
        f"SELECT name FROM jobs WHERE kind = ? AND dest = ? AND name != ? "
        f"AND state IN ({','.join('?' * len(states))}) LIMIT 1",
        (KIND, dest, name, *states),
    ).fetchone()
    if other:
        raise InvalidArgument(
            f"dest {dest} is being cleaned into by job {other[0]!r}; wait for it to end "
            "(a later job over the same dest rebuilds only what changed)"
        )


def ended_followers(conn: apsw.Connection) -> list[jobs.JobRow]:
    """Clean jobs --after a download that have ended (completed or failed)."""
    return [
        job
        for job in jobs.jobs_in_states(conn, (JobState.COMPLETED, JobState.FAILED), kind=KIND)
        if json.loads(job.spec).get("after")
    ]


def unregistered(conn: apsw.Connection, job_id: int, scan: Scan) -> int:
    """How many of the scan's zips the job has not registered as they are now."""
    known = {
        path: (zip_id, state, size, mtime_ns, sha256)
        for zip_id, path, state, size, mtime_ns, sha256 in conn.execute(
            "SELECT id, path, state, size, mtime_ns, sha256 FROM clean_zips WHERE job_id = ?",
            (job_id,),
        )
    }
    return sum(1 for f in scan.zips if f.path not in known or _changed(f, known[f.path]))


def reopen(conn: apsw.Connection, job_id: int, state: str, message: str) -> jobs.JobRow | None:
    """An ended job queued again (as `bfctl resume` does), if it is still as it was read."""
    job = jobs.job_by_id(conn, job_id)
    if job is None or job.state != state:
        return None
    return jobs.move_job(conn, job, JobState.QUEUED, message=message)


def inputs(conn: apsw.Connection, job_id: int) -> Inputs:
    row = conn.execute(
        "SELECT outside, first_outside, filtered, seen_file_id FROM clean_inputs WHERE job_id = ?",
        (job_id,),
    ).fetchone()
    return Inputs(*row)


# -- registration ------------------------------------------------------------------------------


def register(conn: apsw.Connection, job_id: int, scan: Scan, whole: bool) -> tuple[int, int]:
    """Add the scan's new zips and send changed ones back to pending; (new, changed).

    A whole scan (the job starts) replaces what it found outside the layout; a
    scan of a download's newer files adds to it.
    """
    known = {
        path: (zip_id, state, size, mtime_ns, sha256)
        for zip_id, path, state, size, mtime_ns, sha256 in conn.execute(
            "SELECT id, path, state, size, mtime_ns, sha256 FROM clean_zips WHERE job_id = ?",
            (job_id,),
        )
    }
    stamp = now_ms()
    new = [found for found in scan.zips if found.path not in known]
    conn.executemany(
        "INSERT INTO clean_zips (job_id, path, series, first_day, last_day, size, mtime_ns, "
        "sha256, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                job_id,
                found.path,
                found.source.series_dir,
                found.source.first.isoformat(),
                found.source.last.isoformat(),
                found.size,
                found.mtime_ns,
                found.sha256,
                stamp,
            )
            for found in new
        ],
    )
    changed = [
        (found, known[found.path])
        for found in scan.zips
        if found.path in known and _changed(found, known[found.path])
    ]
    moves = [
        (S.PENDING, row[0], (found.size, found.mtime_ns, found.sha256, stamp))
        for found, row in changed
        if row[1] in (S.DONE, S.FAILED)
    ]
    for old in (S.DONE, S.FAILED):
        guarded_update_each(
            conn,
            "clean_zips",
            old,
            zip_machine.check_transition,
            (
                "size",
                "mtime_ns",
                "sha256",
                "updated_at",
                "attempts",
                "step",
                "error_class",
                "error",
            ),
            [(new, i, (*values, 0, None, None, None)) for new, i, values in moves],
            require_all=False,
        )
    conn.executemany(
        "UPDATE clean_zips SET size = ?, mtime_ns = ?, sha256 = ?, updated_at = ? "
        "WHERE id = ? AND state = 'pending'",
        [
            (found.size, found.mtime_ns, found.sha256, stamp, row[0])
            for found, row in changed
            if row[1] == S.PENDING
        ],
    )
    _note_inputs(conn, job_id, scan, whole)
    return len(new), len(changed)


def _changed(found: Found, row: tuple) -> bool:
    _, _, size, mtime_ns, sha256 = row
    if found.sha256 and sha256 and found.sha256 != sha256:
        return True
    return (found.size, found.mtime_ns) != (size, mtime_ns)


def _note_inputs(conn: apsw.Connection, job_id: int, scan: Scan, whole: bool) -> None:
    if whole:
        conn.execute(
            "UPDATE clean_inputs SET outside = ?, first_outside = ?, filtered = ?, "
            "seen_file_id = max(seen_file_id, ?) WHERE job_id = ?",
            (scan.outside, scan.first_outside, scan.filtered, scan.seen_file_id, job_id),
        )
        return
    conn.execute(
        "UPDATE clean_inputs SET outside = outside + ?, "
        "first_outside = CASE first_outside WHEN '' THEN ? ELSE first_outside END, "
        "filtered = filtered + ?, seen_file_id = max(seen_file_id, ?) WHERE job_id = ?",
        (scan.outside, scan.first_outside, scan.filtered, scan.seen_file_id, job_id),
    )


# -- claiming and finishing a series -----------------------------------------------------------


def claim_series(
    conn: apsw.Connection, job_id: int, root: str, busy: set[str], limit: int
) -> list[Claimed]:
    """Up to `limit` series with pending zips, none in busy: their pending zips now run.

    Each comes with every usable zip of its series (those done too: a partition is
    rebuilt from all of its sources); root is the layout root their paths are under.
    """
    series = [
        name
        for (name,) in conn.execute(
            "SELECT DISTINCT series FROM clean_zips WHERE job_id = ? AND state = 'pending' "
            "ORDER BY series",
            (job_id,),
        )
        if name not in busy
    ][:limit]
    claimed = []
    stamp = now_ms()
    for name in series:
        guarded_update_where(
            conn,
            "clean_zips",
            S.PENDING,
            S.RUNNING,
            zip_machine.check_transition,
            "job_id = ? AND series = ?",
            (job_id, name),
            updated_at=stamp,
        )
        conn.execute(
            "UPDATE clean_zips SET attempts = attempts + 1 "
            "WHERE job_id = ? AND series = ? AND state = 'running'",
            (job_id, name),
        )
        claimed.append(Claimed(name, _series_zips(conn, job_id, name, root)))
    return claimed


def _series_zips(conn: apsw.Connection, job_id: int, series: str, root: str) -> list[ZipInput]:
    unusable = ",".join(f"'{step}'" for step in UNUSABLE_STEPS)
    return [
        ZipInput(zip_id, path, root, size, mtime_ns, sha256, home=state == S.RUNNING)
        for zip_id, path, size, mtime_ns, sha256, state in conn.execute(
            "SELECT id, path, size, mtime_ns, sha256, state FROM clean_zips "
            "WHERE job_id = ? AND series = ? "
            f"AND NOT (state = 'failed' AND coalesce(step, '') IN ({unusable})) ORDER BY path",
            (job_id, series),
        )
    ]


def empty_days(conn: apsw.Connection, dest: str, series: str) -> dict[str, str]:
    """Days of the series built with no rows under dest: day -> digest."""
    return dict(
        conn.execute(
            "SELECT day, digest FROM clean_partitions WHERE dest = ? AND series = ? AND rows = 0",
            (dest, series),
        ).fetchall()
    )


def finish_series(
    conn: apsw.Connection, job_id: int, dest: str, claimed: Claimed, result: SeriesResult
) -> tuple[int, int]:
    """The series' outcome, once its partitions are durable: its zips, its partitions.

    What a zip was found to be (size, mtime, sha256) and its row counts are kept
    only when known: a zip whose partitions were all up to date was not parsed.
    """
    stamp = now_ms()
    outcomes = {zip_id: result.zips[zip_id] for zip_id in claimed.home}
    guarded_update_each(
        conn,
        "clean_zips",
        S.RUNNING,
        zip_machine.check_transition,
        ("step", "error_class", "error", "finished_at", "updated_at"),
        [
            (
                S.FAILED if outcome.failure else S.DONE,
                zip_id,
                (*(outcome.failure or (None, None, None)), stamp, stamp),
            )
            for zip_id, outcome in outcomes.items()
        ],
    )
    conn.executemany(
        "UPDATE clean_zips SET size = ?, mtime_ns = ?, sha256 = ? WHERE id = ?",
        [(o.size, o.mtime_ns, o.sha256, i) for i, o in outcomes.items() if o.sha256],
    )
    conn.executemany(
        "UPDATE clean_zips SET rows_in = ?, rows_rejected = ? WHERE id = ?",
        [
            (o.rows_in, sum((o.rejected or {}).values()), i)
            for i, o in outcomes.items()
            if o.rows_in is not None
        ],
    )
    conn.executemany(
        "INSERT INTO clean_partitions (dest, series, day, digest, rows) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (dest, series, day) DO UPDATE SET digest = excluded.digest, "
        "rows = excluded.rows",
        [(dest, claimed.series, day, digest, rows) for day, (digest, rows) in result.built.items()],
    )
    failed = sum(1 for outcome in outcomes.values() if outcome.failure)
    return len(outcomes) - failed, failed


def release(conn: apsw.Connection, job_id: int, series: str) -> None:
    """An interrupted series: its running zips back to pending."""
    guarded_update_where(
        conn,
        "clean_zips",
        S.RUNNING,
        S.PENDING,
        zip_machine.check_transition,
        "job_id = ? AND series = ?",
        (job_id, series),
        updated_at=now_ms(),
    )


def fail_series(
    conn: apsw.Connection, job_id: int, series: str, error_class: str, error: str
) -> None:
    """A series whose partitions could not be written: its running zips fail at `write`."""
    stamp = now_ms()
    guarded_update_where(
        conn,
        "clean_zips",
        S.RUNNING,
        S.FAILED,
        zip_machine.check_transition,
        "job_id = ? AND series = ?",
        (job_id, series),
        step="write",
        error_class=error_class,
        error=error,
        finished_at=stamp,
        updated_at=stamp,
    )


def job_zips(conn: apsw.Connection, job_id: int) -> list[tuple]:
    """(path, series, state, sha256, rows_in, rows_rejected) of every zip, in path order."""
    return conn.execute(
        "SELECT path, series, state, sha256, rows_in, rows_rejected FROM clean_zips "
        "WHERE job_id = ? ORDER BY path",
        (job_id,),
    ).fetchall()
