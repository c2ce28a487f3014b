"""`bfctl export`: a scenes job's outcome in the layout teams already use.

- `successful_tokens.parquet`: scene_token, processed_at, batch_num (the shard);
- `failed_tokens.parquet`: scene_token, error_msg, batch_num, step, failed_at;
- `progress.json`: total_scenes, processed_scenes, successful_count, failed_count,
  current_batch, timestamp.

All three come from one read transaction (one moment of the store) and each is
written to a temporary name, fsynced and renamed, so a reader never sees a
half-written file or files of two different moments. Rows stream from the store
in pages: a 10M-item job never sits in memory.
"""

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import apsw
import pyarrow as pa
import pyarrow.parquet as pq

from bulkforge.daemon.durable import fsync_or_die, replace_durably, write_durably
from bulkforge.daemon.jobs import JobRow
from bulkforge.daemon.scenes import records
from bulkforge.daemon.store import now_ms

PAGE_ROWS = 65_536
SUCCESSFUL = "successful_tokens.parquet"
FAILED = "failed_tokens.parquet"
PROGRESS = "progress.json"

_TIME = pa.timestamp("ms", tz="UTC")
SUCCESS_SCHEMA = pa.schema(
    [("scene_token", pa.string()), ("processed_at", _TIME), ("batch_num", pa.int64())]
)
FAILED_SCHEMA = pa.schema(
    [
        ("scene_token", pa.string()),
        ("error_msg", pa.string()),
        ("batch_num", pa.int64()),
        ("step", pa.string()),
        ("failed_at", _TIME),
    ]
)


@dataclass(frozen=True)
class Exported:
    paths: list[Path]
    total: int
    successful: int
    failed: int


def write(conn: apsw.Connection, job: JobRow, dest: Path) -> Exported:
    successful = _write_parquet(
        conn,
        dest / SUCCESSFUL,
        SUCCESS_SCHEMA,
        "SELECT key, finished_at, shard FROM scenes WHERE job_id = ? AND state = 'done' "
        "ORDER BY id",
        job.id,
    )
    failed = _write_parquet(
        conn,
        dest / FAILED,
        FAILED_SCHEMA,
        "SELECT key, coalesce(error_class, '') || ': ' || coalesce(error, ''), shard, step, "
        "finished_at FROM scenes WHERE job_id = ? AND state = 'failed' ORDER BY id",
        job.id,
    )
    total = _total(conn, job.id)
    (current,) = conn.execute(
        "SELECT max(idx) FROM batches WHERE job_id = ? AND state = 'complete'", (job.id,)
    ).fetchone()
    progress = {
        "job": job.name,
        "total_scenes": total,
        "processed_scenes": successful + failed,
        "successful_count": successful,
        "failed_count": failed,
        "current_batch": current,
        "timestamp": datetime.fromtimestamp(now_ms() / 1000, UTC).isoformat(),
    }
    write_durably(dest / PROGRESS, json.dumps(progress, indent=2).encode() + b"\n")
    fsync_or_die(dest)
    return Exported([dest / SUCCESSFUL, dest / FAILED, dest / PROGRESS], total, successful, failed)


def _total(conn: apsw.Connection, job_id: int) -> int:
    """Items of the input: those registered, and rows still to register."""
    progress = records.registration(conn, job_id)
    registered = sum(items for items, _ in records.counts(conn, job_id).values())
    if progress is None:
        return registered
    return max(registered, progress.rows_total - progress.rejected)


def _write_parquet(
    conn: apsw.Connection, path: Path, schema: pa.Schema, sql: str, job_id: int
) -> int:
    temporary = path.with_name(f".{path.name}.tmp")
    written = 0
    cursor = conn.execute(sql, (job_id,))
    with pq.ParquetWriter(temporary, schema) as out:
        while page := list(itertools.islice(cursor, PAGE_ROWS)):
            columns = zip(*page, strict=True)
            arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
            out.write_table(pa.table(arrays, schema=schema))
            written += len(page)
        if not written:
            out.write_table(schema.empty_table())
    replace_durably(temporary, path)
    return written
