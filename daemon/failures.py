"""The failure model every job kind shares: what failed, where, and whether to try again.

A failure names its step (connect, transfer, verify, fetch, a plug-in step …), an
error class (http_5xx, timeout, checksum …) and a message, so `bfctl failures`
and `bfctl retry --step/--error` speak one language for every kind. Each kind
keeps its failed rows in its own table with the same failure columns (state,
step, error_class, error); the reads and the retry filter here work on any of them.
"""

import errno
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import apsw
from loguru import logger

from bulkforge.daemon.governor import WorkerDied, WorkerError
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.store import guarded_update_where, now_ms

_TABLE = re.compile(r"^[a-z_]+$")


@dataclass(frozen=True)
class Failure:
    step: str
    error_class: str
    message: str
    retryable: bool
    # Seconds the origin asked us to wait (Retry-After), if it did.
    retry_after: float | None = None


@dataclass(frozen=True)
class FailureGroupRow:
    step: str
    error_class: str
    count: int
    sample: str


@dataclass(frozen=True)
class FailureRow:
    item: str
    url: str
    step: str
    error_class: str
    error: str
    attempts: int
    retrying: bool


@dataclass
class FailureReport:
    """A job's failures: grouped by step and class, some listed, and how many in all."""

    groups: list[FailureGroupRow]
    failures: list[FailureRow] = field(default_factory=list)
    total: int = 0
    # What the job's items are, plural ("files", "parts"): its kind says.
    item_unit: str = "items"


# Error classes asked once more and then final: a size that disagrees with the manifest
# may be one proxy's slip, but if the origin says it twice the file is another size, and
# further attempts only delay the verdict.
SECOND_OPINION = frozenset({"size"})


def backoff_s(settings: Settings, attempts: int, failure: Failure) -> float | None:
    """Seconds before attempt `attempts + 1`, or None when the failure is final.

    Exponential backoff with full jitter, never sooner than the origin's Retry-After
    (bounded by retry_after_max, so a hostile header cannot park an item for days).
    """
    if not failure.retryable or attempts >= settings.max_attempts:
        return None
    if failure.error_class in SECOND_OPINION and attempts >= 2:
        return None
    ceiling = min(settings.retry_max_delay, settings.retry_base_delay * 2 ** (attempts - 1))
    delay = random.uniform(0, ceiling)
    if failure.retry_after is not None:
        delay = max(delay, min(failure.retry_after, settings.retry_after_max))
    return delay


def failure_groups(
    conn: apsw.Connection, table: str, job_id: int, step: str = ""
) -> list[FailureGroupRow]:
    """Failed rows of a job in a kind's item table by step and error class, most first."""
    if not _TABLE.match(table):
        raise ValueError(f"not an item table: {table!r}")
    return [
        FailureGroupRow(*row)
        for row in conn.execute(
            "SELECT coalesce(step, ''), coalesce(error_class, ''), count(*), "
            f"coalesce(max(error), '') FROM {table} "
            "WHERE job_id = ?2 AND state = 'failed' AND (?1 = '' OR step = ?1) "
            "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            (step, job_id),
        )
    ]


def retry_filter(step: str, error: str) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its parameters) of `bfctl retry --step S --error SUBSTRING`.

    An empty filter matches every failed row; the error matches anywhere in "class: message".
    """
    return (
        "(? = '' OR step = ?) AND "
        "(? = '' OR instr(coalesce(error_class, '') || ': ' || coalesce(error, ''), ?) > 0)",
        (step, step, error, error),
    )


def requeue_failed(
    conn: apsw.Connection,
    table: str,
    moves: tuple[StrEnum, StrEnum, Callable],
    job_id: int,
    step: str,
    error: str,
    **reset,
) -> int:
    """`bfctl retry`: a job's failed rows matching the filters back to pending; how many.

    moves is (failed, pending, the machine's check); reset names further columns to set.
    """
    failed, pending, check = moves
    matches, params = retry_filter(step, error)
    return guarded_update_where(
        conn,
        table,
        failed,
        pending,
        check,
        f"job_id = ? AND {matches}",
        (job_id, *params),
        step=None,
        error_class=None,
        error=None,
        finished_at=None,
        updated_at=now_ms(),
        **reset,
    )


def attempt_logger(error: BaseException):
    """Where a failed attempt (a part, a series, a shard) is logged: a bug with its traceback;
    the filesystem saying no (an OSError: a disk unmounted under a running job, a file gone)
    in one line, its own words being the whole story, since the attempt is retried anyway."""
    return logger if isinstance(error, OSError) else logger.opt(exception=error)


def worker_failure(error: BaseException, what: str) -> tuple[str, str]:
    """(error class, message) of work a worker process failed at; what names the work."""
    if isinstance(error, WorkerDied):  # its class: worker_died, or memory
        return error.error_class, f"the worker process {what} {error}"
    if isinstance(error, MemoryError):
        return "memory", f"{what} ran out of memory: {error}"
    if isinstance(error, WorkerError):  # an exception of a library bfd does not load
        return error.type_name, f"{error.type_name}: {error}"
    if isinstance(error, OSError):
        name = errno.errorcode.get(error.errno or 0, "io").lower()
        return name, f"{what} failed: {error}"
    return type(error).__name__, f"{type(error).__name__}: {error}"
