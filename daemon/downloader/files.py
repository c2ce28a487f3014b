"""File rows: claiming, the guarded moves of one transfer, retry, repair; FILES (its
ItemTable) reads their counts, failures and throughput with the SQL every kind shares.

Every function takes a connection and runs inside a writer operation or a
reader call; the file machine's table is checked before every write.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.downloader.machine import FileState, check_transition
from bulkforge.daemon.downloader.paths import partial_path, resolve_inside
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.failures import Failure, retry_filter
from bulkforge.daemon.item_table import ItemTable
from bulkforge.daemon.store import (
    guarded_update,
    guarded_update_each,
    guarded_update_where,
    now_ms,
)

S = FileState
# A failed file is listed by its path and url, and retries by itself while it has a
# retry_at; triggers keep the counts (file_counts); stats count the files done.
FILES = ItemTable(
    "files",
    S,
    check_transition,
    label="path",
    origin="url",
    retrying="retry_at IS NOT NULL",
    counts_table="file_counts",
    counted="files",
    finished=("done",),
)
CLAIM_COLUMNS = "id, job_id, url, path, size, sha256, md5, etag, validator, attempts, checksum_url"


@dataclass(frozen=True)
class FileRow:
    """What one transfer needs to know of its file."""

    id: int
    job_id: int
    url: str
    path: str
    size: int | None
    sha256: str | None
    md5: str | None
    etag: str | None
    validator: str | None
    attempts: int
    checksum_url: str | None = None


# No budget: more bytes than any disk holds.
UNLIMITED = 2**62

# The first `limit` candidates in order, then those whose sizes add up within the budget:
# the LIMIT comes first, so a claim reads a page of the index, never a whole batch.
_CLAIM = """
WITH head AS (
    SELECT id, coalesce(size, 0) AS size, retry_at FROM files
    WHERE job_id = :job AND {where} ORDER BY {order} LIMIT :limit
), fit AS (
    SELECT id, sum(size) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) AS running
    FROM head
)
UPDATE files SET state = 'downloading', updated_at = :now
WHERE id IN (SELECT id FROM fit WHERE running <= :budget) AND state = '{old}'
RETURNING {columns}
"""
_PENDING = _CLAIM.format(
    where="batch_idx = :batch AND state = 'pending'",
    order="id",
    old="pending",
    columns=CLAIM_COLUMNS,
)


def claim(
    conn: apsw.Connection,
    job_id: int,
    limit: int,
    now: int,
    budget: int = UNLIMITED,
    landed: int = 0,
) -> list[FileRow]:
    """Move up to `limit` files of the job's active batches to downloading, within `budget` bytes.

    Interrupted ones first when their bytes are on the disk already (`landed`: they may use
    those bytes beside the budget), then pending ones batch by batch in id order (the index
    walk needs no sort), then failed ones whose retry is due. The budget is what the disk
    threshold leaves; files of unknown size count as empty.
    """
    active = [
        idx
        for (idx,) in conn.execute(
            "SELECT idx FROM batches WHERE job_id = ? AND state = 'active' ORDER BY idx",
            (job_id,),
        )
    ]
    claimed: list[FileRow] = []
    check_transition(S.PENDING, S.DOWNLOADING)
    marks = ",".join(str(int(idx)) for idx in active)
    if landed and active:
        interrupted = _CLAIM.format(
            where=f"state = 'pending' AND validator IS NOT NULL AND batch_idx IN ({marks})",
            order="id",
            old="pending",
            columns=CLAIM_COLUMNS,
        )
        claimed += _claimed(conn, interrupted, job_id, limit, now, budget + landed, claimed)
        budget += min(landed, sum(row.size or 0 for row in claimed))
    for idx in active:
        if len(claimed) >= limit:
            break
        claimed += _claimed(conn, _PENDING, job_id, limit, now, budget, claimed, batch=idx)
    if active and len(claimed) < limit:
        check_transition(S.FAILED, S.DOWNLOADING)
        due = _CLAIM.format(
            where=f"state = 'failed' AND retry_at IS NOT NULL AND retry_at <= :now "
            f"AND batch_idx IN ({marks})",
            order="retry_at, id",
            old="failed",
            columns=CLAIM_COLUMNS,
        )
        claimed += _claimed(conn, due, job_id, limit, now, budget, claimed)
    return claimed


def _claimed(conn, sql, job_id, limit, now, budget, before, **extra) -> list[FileRow]:
    left = budget - sum(row.size or 0 for row in before)
    if left < 0:
        return []
    arguments = {"job": job_id, "limit": limit - len(before), "now": now, "budget": left}
    return [FileRow(*row) for row in conn.execute(sql, arguments | extra)]


def interrupted_paths(conn: apsw.Connection, job_id: int) -> list[str]:
    """Pending files that began before (a crash, a pause): their bytes may be on disk."""
    return [
        path
        for (path,) in conn.execute(
            "SELECT path FROM files WHERE job_id = ? AND state = 'pending' "
            "AND validator IS NOT NULL",
            (job_id,),
        )
    ]


def any_unknown_size(conn: apsw.Connection, job_id: int) -> bool:
    """Whether some file's size is not known yet (listed without one and not yet fetched)."""
    query = "SELECT 1 FROM files WHERE job_id = ? AND size IS NULL LIMIT 1"
    return conn.execute(query, (job_id,)).fetchone() is not None


def failed_by_batch(conn: apsw.Connection, job_id: int) -> dict[int, int]:
    """Files failed now (retrying or for good), by batch index.

    One index seek per batch: grouping the job's failed files by batch made SQLite walk
    every file of the job in files_by_batch, on each `status`.
    """
    return dict(
        conn.execute(
            "SELECT idx, (SELECT count(*) FROM files WHERE files.job_id = batches.job_id "
            "AND batch_idx = batches.idx AND state = 'failed') FROM batches WHERE job_id = ?",
            (job_id,),
        ).fetchall()
    )


def has_pending(conn: apsw.Connection, job_id: int) -> bool:
    """Whether an active batch of the job still has a file waiting to be claimed."""
    return (
        conn.execute(
            "SELECT 1 FROM files WHERE job_id = ? AND state = 'pending' AND batch_idx IN "
            "(SELECT idx FROM batches WHERE job_id = ? AND state = 'active') LIMIT 1",
            (job_id, job_id),
        ).fetchone()
        is not None
    )


def to_verifying(conn: apsw.Connection, file_id: int, validator: str | None) -> None:
    """Received whole; the validator lets a crash before `done` find the file by checksum."""
    guarded_update(
        conn,
        "files",
        file_id,
        S.DOWNLOADING,
        S.VERIFYING,
        check_transition,
        validator=validator,
        updated_at=now_ms(),
    )


def record_rewritten(
    conn: apsw.Connection, job_id: int, path: str, size: int, sha256: str, md5: str
) -> int:
    """A file of the job that bfd rewrote in place (a zip's sidecar, installed with the
    zip): its row says what is on disk now (its size, md5 and the sha256 bfd saw). Its
    `sha256`, a checksum the listing gave, stays: a re-run compares listings with it.
    Only a row done or skipped; returns how many."""
    conn.execute(
        "UPDATE files SET size = ?1, seen_sha256 = ?2, md5 = ?3, updated_at = ?4 "
        "WHERE job_id = ?5 AND path = ?6 AND state IN ('done', 'skipped') "
        "AND (size IS NOT ?1 OR seen_sha256 IS NOT ?2 OR md5 IS NOT ?3)",
        (size, sha256, md5, now_ms(), job_id, path),
    )
    return conn.changes()


def to_done(conn: apsw.Connection, landed: dict[int, tuple[int, str | None]]) -> list[int]:
    """Commit files (id -> size, the sha256 bfd computed) already fsynced and in place.

    Returns the ids moved; a file no longer verifying (paused under its install) stays.
    """
    stamp = now_ms()
    return guarded_update_each(
        conn,
        "files",
        S.VERIFYING,
        check_transition,
        ("size", "seen_sha256", "retry_at", "finished_at", "updated_at"),
        [
            (S.DONE, file_id, (size, sha256, None, stamp, stamp))
            for file_id, (size, sha256) in landed.items()
        ],
        require_all=False,
    )


def to_failed(
    conn: apsw.Connection,
    row: FileRow,
    old: FileState,
    failure: Failure,
    retry_at: int | None,
) -> None:
    guarded_update(
        conn,
        "files",
        row.id,
        old,
        S.FAILED,
        check_transition,
        attempts=row.attempts + 1,
        retry_at=retry_at,
        step=failure.step,
        error_class=failure.error_class,
        error=failure.message,
        updated_at=now_ms(),
    )


def to_pending(conn: apsw.Connection, file_id: int, old: FileState) -> None:
    """Give an interrupted transfer back; its partial file stays for the resume."""
    guarded_update(conn, "files", file_id, old, S.PENDING, check_transition, updated_at=now_ms())


def record_validator(conn: apsw.Connection, file_id: int, validator: str | None) -> None:
    conn.execute(
        "UPDATE files SET validator = ? WHERE id = ? AND state = 'downloading'",
        (validator, file_id),
    )


def retry_failed(conn: apsw.Connection, job_id: int, step: str, error: str) -> int:
    """Move failed files matching the filters back to pending with a fresh attempt budget.

    Not those of an archived batch (its disk is gone) nor oversize ones (no batch holds them).
    """
    matches, params = retry_filter(step, error)
    return guarded_update_where(
        conn,
        "files",
        S.FAILED,
        S.PENDING,
        check_transition,
        f"job_id = ? AND {matches} AND batch_idx IN "
        "(SELECT idx FROM batches WHERE job_id = ? AND state != 'archived')",
        (job_id, *params, job_id),
        attempts=0,
        retry_at=None,
        step=None,
        error_class=None,
        error=None,
        updated_at=now_ms(),
    )


def retrying_count(conn: apsw.Connection, job_id: int) -> int:
    """Failed files that will be retried automatically after their backoff."""
    (count,) = conn.execute(
        "SELECT count(*) FROM files WHERE job_id = ? AND state = 'failed' AND retry_at IS NOT NULL",
        (job_id,),
    ).fetchone()
    return count


def repair_in_flight(conn: apsw.Connection) -> int:
    """Boot repair: files a crash left downloading or verifying go back to pending.

    A partial without the origin's validator cannot be resumed (it is fetched again
    from zero): it is removed, so it does not hold space that the disk threshold
    would otherwise keep the file itself from.
    """
    stranded = conn.execute(
        "SELECT files.id, files.state, files.path, files.validator, jobs.name, jobs.kind, "
        "jobs.dest "
        "FROM files JOIN jobs ON jobs.id = files.job_id "
        "WHERE files.state IN ('downloading', 'verifying')"
    ).fetchall()
    for file_id, state, path, validator, job_name, kind, dest in stranded:
        to_pending(conn, file_id, FileState(state))
        logger.bind(job=job_name, kind=kind).info(
            "repair: job {} file {} was {} at shutdown -> pending", job_name, path, state
        )
        if validator is None:
            _drop_partial(Path(dest), path)
    return len(stranded)


def _drop_partial(dest: Path, path: str) -> None:
    with contextlib.suppress(InvalidArgument, OSError):
        partial_path(resolve_inside(dest, path)).unlink(missing_ok=True)


def verified(conn: apsw.Connection, job: jobs.JobRow, after: int) -> tuple[list[tuple], int]:
    """Files the job and later download jobs into its dest have on disk, verified, id > after.

    Also the frontier: every file at or below it has settled for good (done or
    skipped), so the next call may start there. A file still to come, or failed
    and perhaps retried, holds the frontier back.
    """
    family = [
        job_id
        for (job_id,) in conn.execute(
            "SELECT id FROM jobs WHERE kind = ? AND dest = ? AND id >= ?",
            (job.kind, job.dest, job.id),
        )
    ]
    marks = ",".join("?" * len(family))
    found = conn.execute(
        f"SELECT files.id, ?, files.path, files.sha256 FROM files WHERE job_id IN ({marks}) "
        "AND id > ? AND state IN ('done', 'skipped') ORDER BY id",
        (job.dest, *family, after),
    ).fetchall()
    unsettled = [
        conn.execute(
            "SELECT min(id) FROM files WHERE job_id = ? "
            "AND state IN ('pending', 'downloading', 'verifying', 'failed')",
            (job_id,),
        ).fetchone()[0]
        for job_id in family
    ]
    waiting = [first for first in unsettled if first is not None]
    frontier = min(waiting) - 1 if waiting else max([0, *(row[0] for row in found)])
    return found, max(after, frontier)
