"""Incremental re-runs: what an earlier job already put at the same place is not fetched again.

A new job over the same destination skips a file when an earlier job has it
done (or skipped) with the same size and the same ETag, sha256 and md5, and it
is still on disk with that size. A file verified by a checksum sidecar
(Binance's X.zip.CHECKSUM) is skipped only when its sidecar is unchanged too,
so a zip whose CHECKSUM changed upstream is fetched again.
"""

import os

import apsw
from loguru import logger

from bulkforge.daemon.downloader.paths import has_size
from bulkforge.daemon.machines.file import FileState, check_transition
from bulkforge.daemon.store import now_ms

UNCHANGED = """
SELECT new.id, new.path, new.size, new.checksum_url FROM files AS new
WHERE new.job_id = :job AND new.state = 'pending' AND new.size IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM jobs AS earlier
    JOIN files AS old ON old.job_id = earlier.id AND old.path = new.path
    WHERE earlier.dest = :dest AND earlier.id != :job
      AND old.state IN ('done', 'skipped')
      AND old.size = new.size
      AND coalesce(old.etag, '') = coalesce(new.etag, '')
      AND coalesce(old.sha256, '') = coalesce(new.sha256, '')
      AND coalesce(old.md5, '') = coalesce(new.md5, '')
  )
"""


def skip_unchanged(conn: apsw.Connection, job_id: int, dest: str) -> int:
    """Move the job's unchanged pending files to skipped; returns how many."""
    check_transition(FileState.PENDING, FileState.SKIPPED)
    candidates = conn.execute(UNCHANGED, {"job": job_id, "dest": dest}).fetchall()
    unchanged_paths = {path for _, path, _, _ in candidates}
    stamp = now_ms()
    skipped = 0
    for file_id, path, size, checksum_url in candidates:
        if checksum_url and f"{path}.CHECKSUM" not in unchanged_paths:
            continue  # its sidecar changed upstream: fetch it again
        if not has_size(os.path.join(dest, path), size):
            continue
        conn.execute(
            "UPDATE files SET state = 'skipped', finished_at = ?, updated_at = ? "
            "WHERE id = ? AND state = 'pending'",
            (stamp, stamp, file_id),
        )
        skipped += conn.changes()
    if skipped:
        logger.info("{} file(s) unchanged since an earlier job at {}: skipped", skipped, dest)
    return skipped
