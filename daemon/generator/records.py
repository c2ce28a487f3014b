"""Generate rows: the job and its parts (claimed, written, failed), and reads.

Every function takes a connection and runs inside a writer operation or a reader
call. A part moves to `done` only in the transaction after its file is durable.
"""

from dataclasses import dataclass

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import machine as part_machine
from bulkforge.daemon.generator.machine import PartState
from bulkforge.daemon.item_table import ItemTable
from bulkforge.daemon.store import guarded_update, guarded_update_each, now_ms

KIND = "generate"
S = PartState
MACHINE = part_machine.check_transition
# Parts are named table/index; their throughput is rows, what a generator makes.
ITEMS = ItemTable(
    "generate_parts",
    S,
    MACHINE,
    label="table_name || '/' || idx",
    finished=("done",),
    measure="sum(rows)",
)


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


# -- reads -------------------------------------------------------------------------------------


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
