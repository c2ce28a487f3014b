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

from datetime import UTC, datetime
from pathlib import Path

import apsw
import pyarrow as pa

from bulkforge.daemon.exports import Exported, write_json, write_parquet
from bulkforge.daemon.jobs import JobRow
from bulkforge.daemon.scenes import records
from bulkforge.daemon.store import now_ms

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


def write(conn: apsw.Connection, job: JobRow, dest: Path) -> Exported:
    successful = write_parquet(
        conn,
        dest / SUCCESSFUL,
        SUCCESS_SCHEMA,
        "SELECT key, finished_at, shard FROM scenes WHERE job_id = ? AND state = 'done' "
        "ORDER BY id",
        (job.id,),
    )
    failed = write_parquet(
        conn,
        dest / FAILED,
        FAILED_SCHEMA,
        "SELECT key, coalesce(error_class, '') || ': ' || coalesce(error, ''), shard, step, "
        "finished_at FROM scenes WHERE job_id = ? AND state = 'failed' ORDER BY id",
        (job.id,),
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
    write_json(dest / PROGRESS, progress)
    return Exported([dest / SUCCESSFUL, dest / FAILED, dest / PROGRESS], total, successful, failed)


def _total(conn: apsw.Connection, job_id: int) -> int:
    """Items of the input: those registered, and rows still to register."""
    progress = records.registration(conn, job_id)
    registered = sum(items for items, _ in records.ITEMS.counts(conn, job_id).values())
    if progress is None:
        return registered
    return max(registered, progress.rows_total - progress.rejected)
