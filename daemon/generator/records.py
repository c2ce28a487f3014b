"""Generate rows: the job and its parts (claimed, written, failed), and reads.

Every function takes a connection and runs inside a writer operation or a reader
call. A part moves to `done` only in the transaction after its file is durable.
"""

from dataclasses import dataclass

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.failures import requeue_failed
from bulkforge.daemon.generator import machine as part_machine
from bulkforge.daemon.generator.machine import PartState
from bulkforge.daemon.store import guarded_update, guarded_update_each, now_ms

KIND = "generate"
S = PartState
MACHINE = part_machine.check_transition


@dataclass(frozen=True)
class Part:
    id: int
    table: str
    index: int
    start: int
    rows: int


def create_job(
    conn: apsw.Connection,
    name: str,
    spec: dict,
    dest: str,
    counts: dict[str, int],
    order: list[str],
    chunk_rows: int,
) -> tuple[jobs.JobRow, bool]:
    """The job and every part of every table, parents first, each chunk_rows rows at most."""
    existing = jobs.existing_job(conn, name, spec)
    if existing is not None:
        return existing, False
    refuse_shared_dest(conn, dest)
    job_id = jobs.insert_job(conn, name, KIND, spec, dest)
    stamp = now_ms()
    conn.executemany(
        "INSERT INTO generate_parts (job_id, table_name, idx, start_row, rows, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (job_id, table, index, start, min(chunk_rows, counts[table] - start), stamp)
            for table in order
            for index, start in enumerate(range(0, counts[table], chunk_rows))
        ],
    )
    return jobs.get_job(conn, name), True


def refuse_shared_dest(conn: apsw.Connection, dest: str) -> None:
    """Parts are named per table: two jobs into one directory would overwrite each other."""
    other = conn.execute(
        "SELECT name FROM jobs WHERE kind = ? AND dest = ? LIMIT 1", (KIND, dest)
    ).fetchone()
    if other:
        raise InvalidArgument(
            f"dest {dest} holds the tables of generate job {other[0]!r}; give each generate "
            "job a directory of its own"
        )


def claim(conn: apsw.Connection, job_id: int, limit: int) -> list[Part]:
    """Up to limit pending parts, in table and part order, now running."""
    rows = conn.execute(
        "SELECT id, table_name, idx, start_row, rows FROM generate_parts "
        "WHERE job_id = ? AND state = 'pending' ORDER BY id LIMIT ?",
        (job_id, limit),
    ).fetchall()
    stamp = now_ms()
    guarded_update_each(
        conn,
        "generate_parts",
        S.PENDING,
        MACHINE,
        ("updated_at",),
        [(S.RUNNING, row[0], (stamp,)) for row in rows],
    )
    conn.executemany(
        "UPDATE generate_parts SET attempts = attempts + 1 WHERE id = ?", [(r[0],) for r in rows]
    )
    return [Part(*row) for row in rows]


def finish(conn: apsw.Connection, part_id: int, size: int, sha256: str) -> None:
    stamp = now_ms()
    guarded_update(
        conn,
        "generate_parts",
        part_id,
        S.RUNNING,
        S.DONE,
        MACHINE,
        size=size,
        sha256=sha256,
        finished_at=stamp,
        updated_at=stamp,
    )


def fail(conn: apsw.Connection, part_id: int, error_class: str, error: str) -> None:
    stamp = now_ms()
    guarded_update(
        conn,
        "generate_parts",
        part_id,
        S.RUNNING,
        S.FAILED,
        MACHINE,
        step="write",
        error_class=error_class,
        error=error,
        finished_at=stamp,
        updated_at=stamp,
    )


def release(conn: apsw.Connection, part_id: int) -> None:
    """An interrupted part back to pending (unless it was committed meanwhile)."""
    guarded_update_each(
        conn,
        "generate_parts",
        S.RUNNING,
        MACHINE,
        ("updated_at",),
        [(S.PENDING, part_id, (now_ms(),))],
        require_all=False,
    )


def repair_in_flight(conn: apsw.Connection) -> list[tuple[str, int]]:
    return jobs.repair_running(conn, "generate_parts", (S.RUNNING, S.PENDING, MACHINE))


def retry_failed(conn: apsw.Connection, job_id: int, step: str, error: str) -> int:
    moves = (S.FAILED, S.PENDING, MACHINE)
    return requeue_failed(conn, "generate_parts", moves, job_id, step, error)


# -- reads -------------------------------------------------------------------------------------


def counts(conn: apsw.Connection, job_id: int) -> dict[str, tuple[int, int]]:
    """State -> (parts, bytes written)."""
    return {
        state: (parts, size)
        for state, parts, size in conn.execute(
            "SELECT state, count(*), coalesce(sum(size), 0) FROM generate_parts "
            "WHERE job_id = ? GROUP BY state",
            (job_id,),
        )
    }


def rows_by_table(
    conn: apsw.Connection, job_id: int, since_ms: int = 0
) -> list[tuple[str, int, int, int, int, int]]:
    """(table, rows written, rows in all, parts done, parts, rows written since since_ms)
    per table, parents first."""
    return conn.execute(
        "SELECT table_name, sum(CASE WHEN state = 'done' THEN rows ELSE 0 END), sum(rows), "
        "sum(state = 'done'), count(*), "
        "sum(CASE WHEN state = 'done' AND finished_at >= ? THEN rows ELSE 0 END) "
        "FROM generate_parts WHERE job_id = ? GROUP BY table_name ORDER BY min(id)",
        (since_ms, job_id),
    ).fetchall()


def unfinished(conn: apsw.Connection, job_id: int) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM generate_parts WHERE job_id = ? AND state IN ('pending', 'running')",
        (job_id,),
    ).fetchone()
    return count


def failed_count(conn: apsw.Connection, job_id: int) -> int:
    return counts(conn, job_id).get(str(S.FAILED), (0, 0))[0]


def failures(conn: apsw.Connection, job_id: int, step: str, limit: int) -> list[tuple]:
    """(table/part, '', step, error class, error, attempts) of failed parts."""
    return conn.execute(
        "SELECT table_name || '/' || idx, '', coalesce(step, ''), coalesce(error_class, ''), "
        "coalesce(error, ''), attempts FROM generate_parts "
        "WHERE job_id = ? AND state = 'failed' AND (? = '' OR step = ?) ORDER BY id LIMIT ?",
        (job_id, step, step, limit),
    ).fetchall()


def throughput(conn: apsw.Connection, job_id: int, bucket_ms: int) -> list[tuple]:
    """(bucket start ms, rows finished, bytes) per bucket: rows, what a generator makes."""
    return conn.execute(
        "SELECT finished_at / ?1 * ?1, sum(rows), coalesce(sum(size), 0) FROM generate_parts "
        "WHERE job_id = ?2 AND state = 'done' GROUP BY 1 ORDER BY 1",
        (bucket_ms, job_id),
    ).fetchall()
