"""Registering a download: its listing staged page by page, then the job in one transaction.

Registration stages a job's rows in a TEMP table of the writer's connection,
page by page, each page its own short transaction; one last transaction
creates the job and moves the rows. A refused or crashed submit leaves nothing
behind, a long listing never holds the writer, and no listing is held in memory.

Functions taking a connection run inside one writer operation.
"""

from collections.abc import Iterable

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.store import now_ms
from bulkforge.proto.units import shown, size_text

KIND = "download"

STAGED_COLUMNS = "url, path, size, sha256, md5, etag, checksum_url"


def stage_open(conn: apsw.Connection, table: str) -> None:
    # on_disk: the size of the file already at dest/path when it was listed (NULL: none),
    # looked up by the listing's thread so the final transaction touches no file system.
    conn.execute(
        f"CREATE TEMP TABLE {table} (url TEXT NOT NULL, path TEXT NOT NULL, size INTEGER, "
        "sha256 TEXT, md5 TEXT, etag TEXT, checksum_url TEXT, on_disk INTEGER)"
    )


def stage_rows(
    conn: apsw.Connection,
    table: str,
    entries: Iterable[FileEntry],
    on_disk: Iterable[int | None] | None = None,
) -> None:
    entries = list(entries)
    sizes = list(on_disk) if on_disk is not None else [None] * len(entries)
    conn.executemany(
        f"INSERT INTO temp.{table} ({STAGED_COLUMNS}, on_disk) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (e.url, e.path, e.size, e.sha256, e.md5, e.etag, e.checksum_url, size)
            for e, size in zip(entries, sizes, strict=True)
        ],
    )


def stage_drop(conn: apsw.Connection, table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")


def create_staged_job(
    conn: apsw.Connection, name: str, spec: dict, dest: str, table: str
) -> tuple[jobs.JobRow, bool]:
    """Create the job from its staged rows in one transaction; idempotent by name."""
    existing = jobs.existing_job(conn, name, spec)
    if existing is not None:
        return existing, False
    duplicate = conn.execute(
        f"SELECT path, min(url), max(url), count(*) FROM temp.{table}"
        " GROUP BY path HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    if duplicate:
        path, first, last, count = duplicate
        urls = (
            f"the URL {shown(first, 200)}"
            if first == last
            else (f"the URLs {shown(first, 200)} and {shown(last, 200)} among them")
        )
        raise InvalidArgument(
            f"{count} entries ({urls}) would all be written to {shown(path, 200)}: "
            "give them distinct paths"
        )
    files, total = conn.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM temp.{table}"
    ).fetchone()
    if not files:
        raise InvalidArgument("the source lists no files")
    stamp = now_ms()
    job_id = jobs.insert_job(conn, name, KIND, spec, dest)
    conn.execute(
        f"INSERT INTO files (job_id, {STAGED_COLUMNS}, updated_at) "
        f"SELECT ?, {STAGED_COLUMNS}, ? FROM temp.{table} ORDER BY rowid",
        (job_id, stamp),
    )
    conn.execute(
        "INSERT INTO batches (job_id, idx, state, files, bytes, updated_at) "
        "VALUES (?, 0, 'planned', ?, ?, ?)",
        (job_id, files, total, stamp),
    )
    return jobs.get_job(conn, name), True


def refuse_larger_than(conn: apsw.Connection, table: str, limit: int, where: str) -> None:
    """A file that could never fit (a size of 2^63 - 1 …) is refused now, not waited for."""
    found = conn.execute(
        f"SELECT path, size FROM temp.{table} WHERE size > ? ORDER BY size DESC LIMIT 1",
        (limit,),
    ).fetchone()
    if found:
        path, size = found
        raise InvalidArgument(
            f"{path!r} is {size_text(size)}, more than {where} holds ({size_text(limit)}): "
            "it could never be downloaded there (a wrong size? or cut the job with space and "
            "oversize 'skip')"
        )


def create_download_job(
    conn: apsw.Connection, name: str, spec: dict, dest: str, entries: Iterable[FileEntry]
) -> tuple[jobs.JobRow, bool]:
    """Register a job from entries in the caller's one transaction (stores built in place)."""
    table = "staged_inline"
    stage_open(conn, table)
    try:
        stage_rows(conn, table, entries)
        return create_staged_job(conn, name, spec, dest, table)
    finally:
        stage_drop(conn, table)
