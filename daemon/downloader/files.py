"""File rows: claiming, the guarded moves of one transfer, retry, repair, and failure reads.

Every function takes a connection and runs inside a writer operation or a
reader call; the file machine's table is checked before every write.
"""

from dataclasses import dataclass

import apsw
from loguru import logger

from bulkforge.daemon.machines.file import IN_FLIGHT, FileState, check_transition
from bulkforge.daemon.store import guarded_update, now_ms

S = FileState
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


@dataclass(frozen=True)
class Failure:
    step: str
    error_class: str
    message: str
    retryable: bool
    # Seconds the origin asked us to wait (Retry-After), if it did.
    retry_after: float | None = None


def claim(conn: apsw.Connection, job_id: int, limit: int, now: int) -> list[FileRow]:
    """Move up to `limit` files to downloading: pending ones first, then failed ones due."""
    check_transition(S.PENDING, S.DOWNLOADING)
    claimed = list(
        conn.execute(
            f"UPDATE files SET state = 'downloading', updated_at = ? "
            f"WHERE id IN (SELECT id FROM files WHERE job_id = ? AND state = 'pending' "
            f"ORDER BY id LIMIT ?) AND state = 'pending' RETURNING {CLAIM_COLUMNS}",
            (now, job_id, limit),
        )
    )
    if len(claimed) < limit:
        check_transition(S.FAILED, S.DOWNLOADING)
        claimed += conn.execute(
            f"UPDATE files SET state = 'downloading', updated_at = ? "
            f"WHERE id IN (SELECT id FROM files WHERE job_id = ? AND state = 'failed' "
            f"AND retry_at IS NOT NULL AND retry_at <= ? ORDER BY retry_at LIMIT ?) "
            f"AND state = 'failed' RETURNING {CLAIM_COLUMNS}",
            (now, job_id, now, limit - len(claimed)),
        )
    return [FileRow(*row) for row in claimed]


def next_retry_at(conn: apsw.Connection, job_id: int) -> int | None:
    (due,) = conn.execute(
        "SELECT min(retry_at) FROM files WHERE job_id = ? AND state = 'failed' "
        "AND retry_at IS NOT NULL",
        (job_id,),
    ).fetchone()
    return due


def to_verifying(conn: apsw.Connection, file_id: int) -> None:
    guarded_update(
        conn, "files", file_id, S.DOWNLOADING, S.VERIFYING, check_transition, updated_at=now_ms()
    )


def to_done(conn: apsw.Connection, file_id: int, size: int) -> None:
    """Commit a file whose bytes are already fsynced and renamed into place."""
    stamp = now_ms()
    guarded_update(
        conn,
        "files",
        file_id,
        S.VERIFYING,
        S.DONE,
        check_transition,
        size=size,
        retry_at=None,
        finished_at=stamp,
        updated_at=stamp,
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
    """Move failed files matching the filters back to pending with a fresh attempt budget."""
    check_transition(S.FAILED, S.PENDING)
    conn.execute(
        "UPDATE files SET state = 'pending', attempts = 0, retry_at = NULL, step = NULL, "
        "error_class = NULL, error = NULL, updated_at = ? "
        "WHERE job_id = ? AND state = 'failed' AND (? = '' OR step = ?) "
        "AND (? = '' OR instr(coalesce(error_class, '') || ': ' || coalesce(error, ''), ?) > 0)",
        (now_ms(), job_id, step, step, error, error),
    )
    return conn.changes()


def retrying_count(conn: apsw.Connection, job_id: int) -> int:
    """Failed files that will be retried automatically after their backoff."""
    (count,) = conn.execute(
        "SELECT count(*) FROM files WHERE job_id = ? AND state = 'failed' AND retry_at IS NOT NULL",
        (job_id,),
    ).fetchone()
    return count


def open_work(conn: apsw.Connection, job_id: int) -> tuple[int, int, int]:
    """(pending + in flight, failed awaiting an automatic retry, failed for good)."""
    counts = dict(
        conn.execute(
            "SELECT state, files FROM file_counts WHERE job_id = ? AND files > 0", (job_id,)
        ).fetchall()
    )
    retrying = retrying_count(conn, job_id)
    unfinished = sum(counts.get(state, 0) for state in (S.PENDING, *IN_FLIGHT))
    return unfinished, retrying, counts.get(S.FAILED, 0) - retrying


def repair_in_flight(conn: apsw.Connection) -> int:
    """Boot repair: files a crash left downloading or verifying go back to pending."""
    stranded = conn.execute(
        "SELECT files.id, files.state, files.path, jobs.name FROM files "
        "JOIN jobs ON jobs.id = files.job_id "
        "WHERE files.state IN ('downloading', 'verifying')"
    ).fetchall()
    for file_id, state, path, job_name in stranded:
        to_pending(conn, file_id, FileState(state))
        logger.info("repair: job {} file {} was {} at shutdown -> pending", job_name, path, state)
    return len(stranded)


@dataclass(frozen=True)
class FailureGroupRow:
    step: str
    error_class: str
    count: int
    sample: str


@dataclass(frozen=True)
class FailureRow:
    item: str
    url: str
    step: str
    error_class: str
    error: str
    attempts: int
    retrying: bool


def failure_groups(conn: apsw.Connection, job_id: int, step: str = "") -> list[FailureGroupRow]:
    return [
        FailureGroupRow(*row)
        for row in conn.execute(
            "SELECT coalesce(step, ''), coalesce(error_class, ''), count(*), "
            "coalesce(max(error), '') FROM files "
            "WHERE job_id = ? AND state = 'failed' AND (? = '' OR step = ?) "
            "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            (job_id, step, step),
        )
    ]


def failures(conn: apsw.Connection, job_id: int, step: str, limit: int) -> list[FailureRow]:
    return [
        FailureRow(*row[:6], bool(row[6]))
        for row in conn.execute(
            "SELECT path, url, coalesce(step, ''), coalesce(error_class, ''), "
            "coalesce(error, ''), attempts, retry_at IS NOT NULL FROM files "
            "WHERE job_id = ? AND state = 'failed' AND (? = '' OR step = ?) "
            "ORDER BY id LIMIT ?",
            (job_id, step, step, limit),
        )
    ]


def throughput(conn: apsw.Connection, job_id: int, bucket_ms: int = 60_000) -> list[tuple]:
    """(bucket start ms, files finished, bytes finished) per bucket, oldest first."""
    return conn.execute(
        "SELECT finished_at / ?1 * ?1, count(*), coalesce(sum(size), 0) FROM files "
        "WHERE job_id = ?2 AND state = 'done' GROUP BY 1 ORDER BY 1",
        (bucket_ms, job_id),
    ).fetchall()
