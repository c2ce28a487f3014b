"""Incremental re-runs: what an earlier job already put at the same place is not fetched again.

A new job over the same destination skips a file when an earlier job has it
done (or skipped) with the same size and the same ETag, sha256 and md5, and it
is still on disk with that size. A file verified by a checksum sidecar
(Binance's X.zip.CHECKSUM) is skipped only when its sidecar is unchanged too,
so a zip whose CHECKSUM changed upstream is fetched again.
"""

from pathlib import Path

import apsw
from loguru import logger

from bulkforge.daemon.downloader.machine import FileState, check_transition
from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.store import guarded_update_each, now_ms

# Staged rows first (CROSS JOIN fixes the order): only those with a file already on disk
# can be skipped, and each finds its new row by the (job_id, path) index. The other way
# round, the unindexed staging table was scanned once per new file: quadratic.
# The earlier row of the same file, unchanged since (the same size, ETag and checksums).
_EARLIER = """
    FROM jobs AS earlier
    JOIN files AS old ON old.job_id = earlier.id AND old.path = new.path
    WHERE earlier.dest = :dest AND earlier.id != :job
      AND old.state IN ('done', 'skipped')
      AND old.size = new.size
      AND coalesce(old.etag, '') = coalesce(new.etag, '')
      AND coalesce(old.sha256, '') = coalesce(new.sha256, '')
      AND coalesce(old.md5, '') = coalesce(new.md5, '')
"""
# A skipped file keeps the sha256 bfd computed when it was installed, for `bfctl verify`.
UNCHANGED = f"""
SELECT new.id, new.path, new.checksum_url,
  (SELECT old.seen_sha256 {_EARLIER} ORDER BY old.seen_sha256 IS NULL LIMIT 1)
FROM temp.{{staged}} AS staged
CROSS JOIN files AS new ON new.job_id = :job AND new.path = staged.path
WHERE staged.on_disk IS NOT NULL AND staged.on_disk = new.size AND new.state = 'pending'
  AND EXISTS (SELECT 1 {_EARLIER})
"""


def skip_unchanged(conn: apsw.Connection, job_id: int, dest: str, staged: str) -> int:
    """Move the job's unchanged pending files to skipped; returns how many.

    `staged` is the registration's staging table, which carries the size each
    file had on disk when it was listed: no file system call happens here.
    """
    candidates = conn.execute(
        UNCHANGED.format(staged=staged), {"job": job_id, "dest": dest}
    ).fetchall()
    unchanged_paths = {path for _, path, _, _ in candidates}
    stamp = now_ms()
    skipped = len(
        guarded_update_each(
            conn,
            "files",
            FileState.PENDING,
            check_transition,
            ("seen_sha256", "finished_at", "updated_at"),
            [
                (FileState.SKIPPED, file_id, (seen, stamp, stamp))
                for file_id, path, checksum_url, seen in candidates
                # A zip whose sidecar changed upstream is fetched again.
                if not checksum_url or f"{path}.CHECKSUM" in unchanged_paths
            ],
        )
    )
    if skipped:
        logger.info("{} file(s) unchanged since an earlier job at {}: skipped", skipped, dest)
    return skipped


def sizes_on_disk(dest: Path, entries: list[FileEntry]) -> list[int | None]:
    """The size of each entry's file already under dest, or None. Runs in a worker thread."""
    return [_size(dest / entry.path) for entry in entries]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
