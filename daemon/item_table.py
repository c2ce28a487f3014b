"""A kind's item table and the SQL every item table shares, written once.

Each kind keeps its items (files, scenes, zips, parts) in a table of its own with the
shared columns: job_id, state, size, attempts, step, error_class, error, finished_at,
updated_at. What a kind's job view, `bfctl failures`, `stats`, `retry` and boot repair
read or move there is the same SQL over another table name: counts by state, failures by
step and class, the failed items listed, throughput buckets, failed items back to pending,
running items back to pending. A kind declares its `ItemTable` (the table, its machine,
how it names an item in a listing, what its throughput counts) and keeps only the SQL that
is truly its own (registering, claiming, finishing).

It imports no kind: the seam (`pipeline.ItemRows`) and the kinds import it.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.failures import (
    FailureGroupRow,
    FailureReport,
    FailureRow,
    failure_groups,
    requeue_failed,
)
from bulkforge.daemon.store import guarded_update_each, now_ms

# Names and SQL pieces are put into statements as they are: declarations, never input.
_NAME = re.compile(r"^[a-z_]+$")


@dataclass(frozen=True)
class ItemTable:
    """One kind's item table: what is put into the shared statements.

    `states` is its machine's states and `check` the machine's check of a move; retry,
    repair and release need PENDING, RUNNING and FAILED among them (every item machine has
    them; the downloader's files, whose moves are their own, use only the reads).
    """

    table: str
    states: type[StrEnum]
    check: Callable
    # A failure listing's first two columns, SQL over the table: how a person names the
    # item (its key, its path) and where it came from (its url), and their order.
    label: str
    origin: str = "''"
    listed_by: str = "id"
    # SQL: whether a failed item will be tried again by itself (after its backoff).
    retrying: str = "0"
    # A table that triggers keep (job_id, state, <counted>, bytes): read instead of
    # counting a table of millions of rows at each status.
    counts_table: str = ""
    counted: str = "items"
    # Throughput: the states whose finished items a bucket counts, and what it adds up
    # (items, or the rows a part holds).
    finished: tuple[str, ...] = ("done", "failed")
    measure: str = "count(*)"
    # What `bfctl retry` resets beside the failure columns (an attempt budget, a shard).
    retry_resets: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in (self.table, self.counts_table or "x", self.counted):
            if not _NAME.match(name):
                raise ValueError(f"item table {self.table!r}: {name!r} is not a table or column")
        unknown = [state for state in self.finished if state not in set(self.states)]
        if unknown:
            raise ValueError(f"item table {self.table}: {unknown} are not its states")

    # -- reads -----------------------------------------------------------------------------

    def counts(self, conn: apsw.Connection, job_id: int, *only: str) -> dict[str, tuple[int, int]]:
        """State -> (items, bytes), of the states given or of every state with items."""
        which = f" AND state IN ({','.join('?' * len(only))})" if only else ""
        if self.counts_table:
            sql = (
                f"SELECT state, {self.counted}, bytes FROM {self.counts_table} "
                f"WHERE job_id = ? AND {self.counted} > 0{which}"
            )
        else:
            sql = (
                f"SELECT state, count(*), coalesce(sum(size), 0) FROM {self.table} "
                f"WHERE job_id = ?{which} GROUP BY state"
            )
        return {state: (items, size) for state, items, size in conn.execute(sql, (job_id, *only))}

    def unfinished(self, conn: apsw.Connection, job_id: int) -> int:
        """Items still to be done or being done: pending or running."""
        waiting = (str(self.states("pending")), str(self.states("running")))
        return sum(items for items, _ in self.counts(conn, job_id, *waiting).values())

    def failed(self, conn: apsw.Connection, job_id: int) -> int:
        return sum(items for items, _ in self.counts(conn, job_id, "failed").values())

    def failure_groups(
        self, conn: apsw.Connection, job_id: int, step: str
    ) -> list[FailureGroupRow]:
        return failure_groups(conn, self.table, job_id, step)

    def failures(
        self, conn: apsw.Connection, job_id: int, step: str, limit: int
    ) -> list[FailureRow]:
        """Up to limit failed items (at `step`, or any): (item, origin, step, error class,
        error, attempts, retrying), in the kind's order."""
        return [
            FailureRow(*row[:6], bool(row[6]))
            for row in conn.execute(
                f"SELECT {self.label}, {self.origin}, coalesce(step, ''), "
                "coalesce(error_class, ''), coalesce(error, ''), attempts, "
                f"{self.retrying} FROM {self.table} "
                "WHERE job_id = ? AND state = 'failed' AND (? = '' OR step = ?) "
                f"ORDER BY {self.listed_by} LIMIT ?",
                (job_id, step, step, limit),
            )
        ]

    def report(self, conn: apsw.Connection, job_id: int, step: str, limit: int) -> FailureReport:
        """`bfctl failures`: the groups, and up to limit failed items listed (none: limit 0)."""
        groups = self.failure_groups(conn, job_id, step)
        listed = self.failures(conn, job_id, step, limit) if limit else []
        return FailureReport(groups, listed, sum(group.count for group in groups))

    def throughput(self, conn: apsw.Connection, job_id: int, bucket_ms: int) -> list[tuple]:
        """(bucket start ms, what finished, bytes) per bucket, oldest first."""
        states = ",".join("?" * len(self.finished))
        return conn.execute(
            f"SELECT finished_at / ?1 * ?1, {self.measure}, coalesce(sum(size), 0) "
            f"FROM {self.table} WHERE job_id = ?2 AND state IN ({states}) "
            "AND finished_at IS NOT NULL GROUP BY 1 ORDER BY 1",
            (bucket_ms, job_id, *self.finished),
        ).fetchall()

    # -- moves -----------------------------------------------------------------------------

    def retry(self, conn: apsw.Connection, job_id: int, step: str, error: str) -> int:
        """`bfctl retry`: failed items matching the filters back to pending; how many."""
        moves = (self.states("failed"), self.states("pending"), self.check)
        return requeue_failed(conn, self.table, moves, job_id, step, error, **self.retry_resets)

    def repair(self, conn: apsw.Connection) -> list[tuple[str, int]]:
        """Boot repair: items a crash left running back to pending; (job name, count) per job."""
        return jobs.repair_running(
            conn, self.table, (self.states("running"), self.states("pending"), self.check)
        )

    def release(self, conn: apsw.Connection, ids: list[int]) -> None:
        """Interrupted items back to pending, keeping the rest of their row (the shard they
        were claimed into); those committed meanwhile stay as they are."""
        stamp = now_ms()
        pending = self.states("pending")
        guarded_update_each(
            conn,
            self.table,
            self.states("running"),
            self.check,
            ("updated_at",),
            [(pending, item_id, (stamp,)) for item_id in ids],
            require_all=False,
        )
