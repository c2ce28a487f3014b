"""Scene rows: registration, shard claims, the outcome of a written shard, and reads.

Counts, failures, throughput, retry, repair and release are the shared SQL of ITEMS.

Every function takes a connection and runs inside a writer operation or a
reader call. A shard is a batch row of its job: claimed `active` with its
items `running`, and moved to `complete` in the same transaction that commits
its items `done` or `failed`, which happens only once its files are durable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.item_table import ItemTable
from bulkforge.daemon.jobs import Registration
from bulkforge.daemon.machines import batch as batch_machine
from bulkforge.daemon.machines.batch import BatchState
from bulkforge.daemon.scenes import machine as scene_machine
from bulkforge.daemon.scenes.machine import SceneState
from bulkforge.daemon.store import (
    guarded_update,
    guarded_update_each,
    guarded_update_where,
    now_ms,
)

if TYPE_CHECKING:
    from bulkforge.daemon.scenes.items import ItemChunk

KIND = "scenes"
S = SceneState
MACHINE = scene_machine.check_transition

# Items are named by their key and url in input order; triggers keep their counts
# (scene_counts); a retried item starts a new shard with a fresh attempt budget.
ITEMS = ItemTable(
    "scenes",
    S,
    MACHINE,
    label="key",
    origin="coalesce(url, '')",
    counts_table="scene_counts",
    retry_resets={"attempts": 0, "shard": None},
)


@dataclass(frozen=True)
class ItemRow:
    """What processing one item needs to know of it."""

    id: int
    key: str
    url: str | None
    meta: str | None
    attempts: int

    def kept(self) -> dict:
        return json.loads(self.meta) if self.meta else {}


@dataclass(frozen=True)
class Claimed:
    shard: int
    items: list[ItemRow]


@dataclass(frozen=True)
class Finished:
    """How one item ended, as the store records it."""

    id: int
    state: SceneState
    attempts: int
    size: int | None = None
    step: str | None = None
    error_class: str | None = None
    error: str | None = None


# -- registration ------------------------------------------------------------------------------


def create_job(
    conn: apsw.Connection,
    name: str,
    spec: dict,
    dest: str,
    rows_total: int,
    first: ItemChunk | None,
) -> tuple[jobs.JobRow, bool]:
    """A scenes job with its first chunk of items; the rest is registered as it runs."""
    existing = jobs.existing_job(conn, name, spec)
    if existing is not None:
        return existing, False
    # Shards are numbered per job: two jobs in one directory would overwrite each other's.
    other = conn.execute(
        "SELECT name FROM jobs WHERE kind = ? AND dest = ? LIMIT 1", (KIND, dest)
    ).fetchone()
    if other:
        raise InvalidArgument(
            f"dest {dest} holds the shards of scenes job {other[0]!r}; give each scenes job "
            "a directory of its own"
        )
    job_id = jobs.insert_job(conn, name, KIND, spec, dest)
    open_registration(conn, job_id, rows_total)
    if first is not None:
        register_chunk(conn, job_id, first, 0)
    return jobs.get_job(conn, name), True


def open_registration(conn: apsw.Connection, job_id: int, rows_total: int) -> None:
    conn.execute(
        "INSERT INTO scene_inputs (job_id, rows_total, done) VALUES (?, ?, ?)",
        (job_id, rows_total, int(rows_total == 0)),
    )


def registration(conn: apsw.Connection, job_id: int) -> Registration | None:
    row = conn.execute(
        "SELECT rows_total, rows_read, done, rejected, coalesce(first_rejected, '') "
        "FROM scene_inputs WHERE job_id = ?",
        (job_id,),
    ).fetchone()
    return Registration(row[0], row[1], bool(row[2]), row[3], row[4]) if row else None


def register_chunk(conn: apsw.Connection, job_id: int, chunk: ItemChunk, at: int) -> int:
    """Insert a chunk's items, skipping keys the job has already; returns rows skipped.

    `at` is the input row the chunk starts at: a chunk committed before a crash is
    not registered twice, because its progress row moved with it.
    """
    progress = registration(conn, job_id)
    assert progress is not None
    if progress.rows_read != at:
        return 0  # registered already (a repeated call after a lost answer)
    (last_id,) = conn.execute("SELECT coalesce(max(id), 0) FROM scenes").fetchone()
    # The whole chunk as one JSON array of [key, url, meta], inserted by one statement:
    # SQLite walks it in order (ids follow the input) without a Python call per row.
    rows = json.dumps(
        list(zip(chunk.keys, chunk.urls, chunk.metas, strict=True)),
        ensure_ascii=False,
        separators=(",", ":"),
    )
    conn.execute(
        "INSERT INTO scenes (job_id, key, url, meta, updated_at) "
        "SELECT ?, value ->> 0, value ->> 1, value ->> 2, ? FROM json_each(?) WHERE true "
        "ON CONFLICT (job_id, key) DO NOTHING",
        (job_id, now_ms(), rows),
    )
    inserted = conn.changes()
    rejected = [r.describe() for r in chunk.rejected]
    if inserted < len(chunk.keys):
        rejected += _repeated_keys(conn, job_id, chunk, last_id)
    conn.execute(
        "UPDATE scene_inputs SET rows_read = rows_read + ?, rejected = rejected + ?, "
        "first_rejected = coalesce(first_rejected, ?), done = (rows_read + ? >= rows_total) "
        "WHERE job_id = ?",
        (chunk.read, len(rejected), rejected[0] if rejected else None, chunk.read, job_id),
    )
    return len(rejected)


def _repeated_keys(conn: apsw.Connection, job_id: int, chunk: ItemChunk, last_id: int) -> list:
    """The rows of a chunk whose key an earlier row had (only looked for when there are some)."""
    seen: set[str] = set()
    found = []
    for key, row in zip(chunk.keys, chunk.rows, strict=True):
        (item_id,) = conn.execute(
            "SELECT id FROM scenes WHERE job_id = ? AND key = ?", (job_id, key)
        ).fetchone()
        if key in seen or item_id <= last_id:
            found.append(f"{chunk.source} row {row}: the key {key!r} is repeated (first kept)")
        seen.add(key)
    return found


def finish_registration(conn: apsw.Connection, job_id: int) -> None:
    conn.execute("UPDATE scene_inputs SET done = 1 WHERE job_id = ?", (job_id,))


# -- shards ------------------------------------------------------------------------------------

_ITEM_COLUMNS = "id, key, url, meta, attempts"
# What finishing an item writes beside its state (Finished's fields, then the times).
FINISHED_COLUMNS = (
    "attempts",
    "size",
    "step",
    "error_class",
    "error",
    "finished_at",
    "updated_at",
)


def claim_shard(
    conn: apsw.Connection, job_id: int, size: int, whole_only: bool, busy: set[int]
) -> Claimed | None:
    """The next shard to work on: an interrupted one first, else `size` new items.

    whole_only: while the input is still being registered, wait for a full shard
    rather than cut a short one.
    """
    (state,) = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if state != "running":
        return None  # paused or cancelled while this claim waited for the writer
    resumed = _interrupted_shard(conn, job_id, busy)
    if resumed is not None:
        return resumed
    rows = conn.execute(
        f"SELECT {_ITEM_COLUMNS} FROM scenes WHERE job_id = ? AND state = 'pending' "
        "AND shard IS NULL ORDER BY id LIMIT ?",
        (job_id, size),
    ).fetchall()
    if not rows or (whole_only and len(rows) < size):
        return None
    (shard,) = conn.execute(
        "SELECT coalesce(max(idx) + 1, 0) FROM batches WHERE job_id = ?", (job_id,)
    ).fetchone()
    stamp = now_ms()
    conn.execute(
        "INSERT INTO batches (job_id, idx, state, files, updated_at) "
        "VALUES (?, ?, 'planned', ?, ?)",
        (job_id, shard, len(rows), stamp),
    )
    guarded_update(
        conn,
        "batches",
        conn.last_insert_rowid(),
        BatchState.PLANNED,
        BatchState.ACTIVE,
        batch_machine.check_transition,
        started_at=stamp,
    )
    # They are the first `size` such rows by id, in this one transaction: their id range
    # holds exactly them, and one statement moves them all.
    guarded_update_where(
        conn,
        "scenes",
        S.PENDING,
        S.RUNNING,
        scene_machine.check_transition,
        "job_id = ? AND shard IS NULL AND id BETWEEN ? AND ?",
        (job_id, rows[0][0], rows[-1][0]),
        expected=len(rows),
        shard=shard,
        updated_at=stamp,
    )
    return Claimed(shard, [ItemRow(*row) for row in rows])


def _interrupted_shard(conn: apsw.Connection, job_id: int, busy: set[int]) -> Claimed | None:
    """A shard whose items a crash or a pause sent back to pending: the same items again.

    A shard with an item still running is not taken: its release has not committed yet.
    """
    for (shard,) in conn.execute(
        "SELECT DISTINCT shard FROM scenes WHERE job_id = ? AND shard IS NOT NULL "
        "AND state IN ('pending', 'running') ORDER BY shard",
        (job_id,),
    ).fetchall():
        if shard in busy:
            continue
        rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS}, state FROM scenes WHERE job_id = ? AND shard = ? "
            "AND state IN ('pending', 'running') ORDER BY id",
            (job_id, shard),
        ).fetchall()
        if any(row[-1] == "running" for row in rows):
            continue
        stamp = now_ms()
        guarded_update_where(
            conn,
            "scenes",
            S.PENDING,
            S.RUNNING,
            scene_machine.check_transition,
            "job_id = ? AND shard = ?",
            (job_id, shard),
            expected=len(rows),
            updated_at=stamp,
        )
        conn.execute(
            "UPDATE batches SET started_at = ?, updated_at = ? WHERE job_id = ? AND idx = ?",
            (stamp, stamp, job_id, shard),
        )
        return Claimed(shard, [ItemRow(*row[:-1]) for row in rows])
    return None


def finish_shard(
    conn: apsw.Connection, job_id: int, shard: int, finished: list[Finished], size: int
) -> None:
    """Commit a written shard: its items done or failed, its batch row complete."""
    stamp = now_ms()
    guarded_update_each(
        conn,
        "scenes",
        S.RUNNING,
        scene_machine.check_transition,
        FINISHED_COLUMNS,
        [
            (f.state, f.id, (f.attempts, f.size, f.step, f.error_class, f.error, stamp, stamp))
            for f in finished
        ],
    )
    (batch_id,) = conn.execute(
        "SELECT id FROM batches WHERE job_id = ? AND idx = ?", (job_id, shard)
    ).fetchone()
    failures = sum(f.state == S.FAILED for f in finished)
    check = batch_machine.check_transition
    guarded_update(conn, "batches", batch_id, BatchState.ACTIVE, BatchState.VERIFYING, check)
    guarded_update(
        conn,
        "batches",
        batch_id,
        BatchState.VERIFYING,
        BatchState.COMPLETE,
        check,
        files=len(finished),
        bytes=size,
        failures=failures,
        updated_at=stamp,
    )
