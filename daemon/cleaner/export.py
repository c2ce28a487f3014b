"""`bfctl export` of a clean job: every zip's outcome, and the job's progress.

- `zips.parquet`: path, series, state, step, error_class, error, sha256, rows_in,
  rows_rejected, finished_at, one row per zip in path order;
- `progress.json`: total_zips, processed_zips, successful_count, failed_count, timestamp.
"""

from datetime import UTC, datetime
from pathlib import Path

import apsw
import pyarrow as pa

from bulkforge.daemon.cleaner import records
from bulkforge.daemon.exports import Exported, write_json, write_parquet
from bulkforge.daemon.jobs import JobRow
from bulkforge.daemon.store import now_ms

ZIPS = "zips.parquet"
PROGRESS = "progress.json"
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("series", pa.string()),
        ("state", pa.string()),
        ("step", pa.string()),
        ("error_class", pa.string()),
        ("error", pa.string()),
        ("sha256", pa.string()),
        ("rows_in", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def write(conn: apsw.Connection, job: JobRow, dest: Path) -> Exported:
    total = write_parquet(
        conn,
        dest / ZIPS,
        SCHEMA,
        f"SELECT {', '.join(SCHEMA.names)} FROM clean_zips WHERE job_id = ? ORDER BY path",
        (job.id,),
    )
    counts = {state: zips for state, (zips, _) in records.ITEMS.counts(conn, job.id).items()}
    done, failed = counts.get("done", 0), counts.get("failed", 0)
    progress = {
        "job": job.name,
        "total_zips": total,
        "processed_zips": done + failed,
        "successful_count": done,
        "failed_count": failed,
        "timestamp": datetime.fromtimestamp(now_ms() / 1000, UTC).isoformat(),
    }
    write_json(dest / PROGRESS, progress)
    return Exported([dest / ZIPS, dest / PROGRESS], total, done, failed)
