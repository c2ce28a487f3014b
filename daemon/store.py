"""The state store: one SQLite file in WAL mode, one writer thread, many readers.

Durability: `synchronous=FULL`. In WAL mode that fsyncs the WAL at every commit,
so a commit that returned survives kill -9 and power loss. The writer groups
every transition queued while the previous commit was syncing into the next
transaction, so millions of transitions cost thousands of fsyncs, not millions.
A caller's future resolves only after its transaction committed: nothing is
acknowledged before it is durable. (NORMAL would sync only at checkpoints and
lose acknowledged commits on power loss; bench/store_bench.py measures both.)
"""

import asyncio
import contextlib
import itertools
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import apsw
from loguru import logger

from bulkforge.daemon.machines import TransitionConflict

T = TypeVar("T")

SYNCHRONOUS = "FULL"
READER_THREADS = 4
# Errors after which the database or the disk under it cannot be trusted: stop.
FATAL_ERRORS = (
    apsw.IOError,
    apsw.FullError,
    apsw.CorruptError,
    apsw.NotADBError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.ProtocolError,
)
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class StoreFatal(Exception):
    """The store hit an I/O error; the daemon must stop, never carry on."""


class SchemaTooNew(Exception):
    """The store was written by a newer bfd; this one must not touch it."""


class TransactionLost(Exception):
    """An operation ended the group's transaction itself (e.g. INSERT OR ROLLBACK)."""


def _settle(op: "_Op", result: Any = None, error: BaseException | None = None) -> None:
    _settle_all([(op, result, error)])


def _settle_all(outcomes: "list[tuple[_Op, Any, BaseException | None]]") -> None:
    """Resolve each operation's future; wake each waiting loop once for all of them."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for op, result, error in outcomes:
        # Futures are running (not cancellable) by now, so this cannot race a caller.
        if not op.future.done():
            if error is None:
                op.future.set_result(result)
            else:
                op.future.set_exception(error)
        if op.loop is not None:
            by_loop.setdefault(op.loop, []).append((op.waiter, result, error))
    for loop, waiters in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
            loop.call_soon_threadsafe(_wake_waiters, waiters)


def _wake_waiters(waiters: list) -> None:
    for waiter, result, error in waiters:
        if waiter.done():
            continue  # its caller was cancelled
        if error is None:
            waiter.set_result(result)
        else:
            waiter.set_exception(error)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def schema_sql() -> str:
    return resources.files("bulkforge").joinpath("schema.sql").read_text()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Numbered migrations, `NNNN_name.sql`; 0001 is the schema as first released."""
    found = []
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version, name = path.stem.split("_", 1)
        found.append(Migration(int(version), name, path.read_text()))
    return found


def configure(conn: apsw.Connection) -> None:
    conn.setbusytimeout(10_000)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
    conn.execute("PRAGMA foreign_keys = ON")
    # After a checkpoint, shrink the WAL back to this size instead of keeping its peak.
    conn.execute("PRAGMA journal_size_limit = 67108864")


# The store names every job's sources and destinations: its owner's alone, whatever the umask.
PRIVATE_MODE = 0o600


def make_private(path: Path) -> None:
    """The database (created empty if new) and its -wal and -shm readable by bfd's user only.

    SQLite gives a new -wal or -shm the mode of its database file, so the database's mode
    is set first; files an older bfd left wider are narrowed.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE))
    for member in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(member, PRIVATE_MODE)


def open_connection(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    configure(conn)
    return conn


@dataclass(frozen=True)
class Schema:
    """Tables with their history: the core's (schema.sql) or one kind's (its tables.sql).

    `sql` makes the tables as the last of `migrations` leaves them. A store that has none
    of them runs `sql` and records every migration as applied; an older one runs the
    migrations it lacks, each with its ledger row in one transaction.
    """

    sql: str
    migrations: list[Migration]

    @classmethod
    def of_package(cls, package: str) -> "Schema":
        """A kind's: `tables.sql` and `migrations/NNNN_*.sql` in its package."""
        root = Path(str(resources.files(package)))
        found = migrations(root / "migrations")
        if not found:
            raise ValueError(f"{package} has tables.sql but no migrations/0001_baseline.sql")
        return cls((root / "tables.sql").read_text(), found)


@dataclass(frozen=True)
class _Ledger:
    """Where a schema's applied migrations are recorded, and how the store names it."""

    label: str  # "store", "store's scenes tables"
    insert: str
    key: tuple[Any, ...] = ()

    @property
    def what(self) -> str:
        return f"the {self.label} {'are' if self.key else 'is'}"

    def row(self, migration: Migration) -> tuple[Any, ...]:
        return (*self.key, migration.version, migration.name, now_ms())


CORE_LEDGER = _Ledger(
    "store", "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
)


def _kind_ledger(kind: str) -> _Ledger:
    return _Ledger(
        f"store's {kind} tables",
        "INSERT INTO kind_migrations (kind, version, name, applied_at) VALUES (?, ?, ?, ?)",
        (kind,),
    )


def apply_schema(
    conn: apsw.Connection,
    migrations_dir: Path = MIGRATIONS_DIR,
    *,
    kinds: Sequence[tuple[str, Schema]] = (),
) -> int:
    """Make or migrate the core's tables, then each kind's, in the order given (the
    registry's: the store imports no kind). Returns the core's version."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    current = None
    if exists:
        (current,) = conn.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        ).fetchone()
    version = _bring_up(
        conn, Schema(schema_sql(), migrations(migrations_dir)), CORE_LEDGER, current
    )
    for kind, schema in kinds:
        (recorded,) = conn.execute(
            "SELECT max(version) FROM kind_migrations WHERE kind = ?", (kind,)
        ).fetchone()
        _bring_up(conn, schema, _kind_ledger(kind), recorded)
    return version


def _bring_up(conn: apsw.Connection, schema: Schema, ledger: _Ledger, current: int | None) -> int:
    """`schema` made whole (`current` None: none of it exists) or migrated from `current`."""
    latest = schema.migrations[-1].version
    if current is None:
        with conn:
            conn.execute(schema.sql)
            conn.executemany(ledger.insert, [ledger.row(m) for m in schema.migrations])
        return latest
    if current > latest:
        raise SchemaTooNew(
            f"{ledger.what} at schema version {current}, newer than this bfd knows ({latest}); "
            "upgrade bulkforge"
        )
    for migration in schema.migrations:
        if migration.version <= current:
            continue
        run_migration(conn, migration.sql, ledger.insert, ledger.row(migration))
        logger.info(
            "{} migrated to version {} ({})", ledger.label, migration.version, migration.name
        )
    return latest


class ForeignKeysBroken(Exception):
    """A migration left a row whose parent is gone; it was rolled back."""


def run_migration(conn: apsw.Connection, sql: str, ledger: str, row: Sequence[Any]) -> None:
    """One migration and its ledger row, committed together or not at all.

    SQLite's 12-step procedure for changing a table (sqlite.org/lang_altertable.html): a
    table is rebuilt by dropping and creating it again. With foreign keys on, dropping a
    parent (jobs) first deletes its rows, checked against every child; and they cannot be
    switched off inside a transaction. So they are off around the transaction, and
    PRAGMA foreign_key_check must find no orphan before it commits.
    """
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        with conn:
            conn.execute(sql)
            conn.execute(ledger, row)
            orphans = list(itertools.islice(conn.execute("PRAGMA foreign_key_check"), 5))
            if orphans:
                raise ForeignKeysBroken(
                    f"migrating it would leave rows whose parent is gone (table, rowid, "
                    f"parent): {[tuple(o[:3]) for o in orphans]}; the store is left as it was"
                )
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def guarded_update(
    conn: apsw.Connection,
    table: str,
    row_id: int,
    old: StrEnum,
    new: StrEnum,
    check: Callable[[Any, Any], None],
    **columns: Any,
) -> None:
    """Move one row from `old` to `new` if the machine allows it and the row is still `old`."""
    check(old, new)
    assignments = ", ".join(f"{name} = ?" for name in ("state", *columns))
    conn.execute(
        f"UPDATE {table} SET {assignments} WHERE id = ? AND state = ?",
        (str(new), *columns.values(), row_id, str(old)),
    )
    if conn.changes() != 1:
        raise TransitionConflict(f"{table} {row_id}: expected state {old} when moving to {new}")


def guarded_update_where(
    conn: apsw.Connection,
    table: str,
    old: StrEnum,
    new: StrEnum,
    check: Callable[[Any, Any], None],
    where: str,
    params: Sequence[Any] = (),
    expected: int | None = None,
    **columns: Any,
) -> int:
    """Move every row matching `where` that is in `old` to `new`, as one statement.

    The move is checked against the machine first. With `expected`, exactly that many
    rows must move, or the whole operation fails (TransitionConflict): a set claimed
    or finished must not lose a member silently. Returns the rows moved. `where` binds
    plain `?` parameters, after the ones of the SET clause (never numbered `?N`).
    """
    check(old, new)
    assignments = ", ".join(f"{name} = ?" for name in ("state", *columns))
    conn.execute(
        f"UPDATE {table} SET {assignments} WHERE state = ? AND ({where})",
        (str(new), *columns.values(), str(old), *params),
    )
    moved = conn.changes()
    if expected is not None and moved != expected:
        raise TransitionConflict(
            f"{table}: {moved} of {expected} rows moved {old} -> {new}; the others were not {old}"
        )
    return moved


def guarded_update_each(
    conn: apsw.Connection,
    table: str,
    old: StrEnum,
    check: Callable[[Any, Any], None],
    columns: Sequence[str],
    moves: Sequence[tuple[StrEnum, int, Sequence[Any]]],
    require_all: bool = True,
) -> list[int]:
    """Each (new state, row id, column values) a compare-and-set move from `old`.

    Every distinct move is checked against the machine; with `require_all` a row
    no longer in `old` fails the whole operation. Returns the ids of the rows moved.
    """
    for new in {new for new, _, _ in moves}:
        check(old, new)
    assignments = ", ".join(f"{name} = ?" for name in ("state", *columns))
    moved = conn.executemany(
        f"UPDATE {table} SET {assignments} WHERE id = ? AND state = ? RETURNING id",
        [(str(new), *values, row_id, str(old)) for new, row_id, values in moves],
    ).fetchall()
    if require_all and len(moved) != len(moves):
        raise TransitionConflict(
            f"{table}: {len(moves) - len(moved)} of {len(moves)} rows were no longer {old}"
        )
    return [row_id for (row_id,) in moved]


@dataclass
class _Op:
    fn: Callable[[apsw.Connection], Any]
    future: Future
    # The awaiting coroutine's loop and future, told once per commit (see Writer.call).
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future | None = None


_STOP = object()


class Writer:
    """The one thread that owns the write connection and group-commits queued operations.

    Each operation runs in its own savepoint, so one that raises (a transition
    conflict, a constraint) is rolled back alone; the others still commit.
    """

    def __init__(
        self, path: Path, on_fatal: Callable[[BaseException], None], max_batch: int = 8192
    ):
        self._path = path
        self._on_fatal = on_fatal
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._latencies_ms: deque[float] = deque(maxlen=10_000)
        self._failed: BaseException | None = None
        self._stopped = False
        self.commits = 0
        self.operations = 0
        # Told the seconds of every group commit (the metrics' histogram, when served).
        self.on_commit: Callable[[float], None] = lambda seconds: None
        self._conn: apsw.Connection | None = None

    def start(self) -> None:
        self._conn = open_connection(self._path)
        self._thread.start()

    def submit(self, fn: Callable[[apsw.Connection], T]) -> "Future[T]":
        return self._enqueue(_Op(fn, Future()))

    def _enqueue(self, op: _Op) -> Future:
        if self._failed is not None:
            _settle(op, error=StoreFatal(f"the store has failed: {self._failed}"))
        elif self._stopped:
            _settle(op, error=StoreFatal("the store is closed"))
        else:
            self._queue.put(op)
        return op.future

    async def call(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run fn(conn) in the next group commit; returns once that commit is durable.

        The waiters of one commit are woken by one call into their loop, not one each:
        a thread waking a loop costs a pipe write and a GIL hand-over per wake-up.
        """
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        future = self._enqueue(_Op(fn, Future(), loop, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            future.cancel()  # not yet running: it never will; running: it commits anyway
            raise

    def call_sync(self, fn: Callable[[apsw.Connection], T]) -> T:
        return self.submit(fn).result()

    def stop(self) -> None:
        """Commit what is queued, then close the connection; later submits fail at once."""
        self._stopped = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._failed is None

    @property
    def queue_depth(self) -> int:
        """Operations waiting for the writer now."""
        return self._queue.qsize()

    def commit_p99_ms(self) -> float:
        latencies = sorted(self._latencies_ms)
        return latencies[int(len(latencies) * 0.99)] if latencies else 0.0

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if batch and not self._commit(batch):
                self._fail_queued()
                break
        assert self._conn is not None
        with contextlib.suppress(apsw.Error):
            self._conn.close()

    def _next_batch(self) -> tuple[list[_Op], bool]:
        """Everything queued right now (up to max_batch); callers that gave up are dropped."""
        batch: list[_Op] = []
        item = self._queue.get()
        while True:
            if item is _STOP:
                return batch, True
            # A future its caller cancelled never runs; a running one can no longer be cancelled.
            if item.future.set_running_or_notify_cancel():
                batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _commit(self, batch: list[_Op]) -> bool:
        """One transaction for the batch. False when the store failed and the writer must stop."""
        conn = self._conn
        assert conn is not None
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [self._run_op(conn, op) for op in batch]
            conn.execute("COMMIT")
        except FATAL_ERRORS as exc:
            self._failed = exc  # on_fatal says so, once for the whole daemon
            fatal = StoreFatal(f"state store I/O failure: {exc}")
            _settle_all([(op, None, fatal) for op in batch])
            self._on_fatal(exc)
            return False
        except Exception as exc:
            # The transaction as a whole failed (busy, or an operation ended it): nothing of
            # the batch is committed, so every operation in it fails, and the writer goes on.
            with contextlib.suppress(apsw.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            logger.error("a group commit of {} operations was rolled back: {}", len(batch), exc)
            _settle_all([(op, None, exc) for op in batch])
            return True
        seconds = time.perf_counter() - started
        self._latencies_ms.append(seconds * 1000)
        self.on_commit(seconds)
        self.commits += 1
        self.operations += len(batch)
        _settle_all(outcomes)
        return True

    @staticmethod
    def _run_op(conn: apsw.Connection, op: _Op) -> tuple[_Op, Any, BaseException | None]:
        conn.execute("SAVEPOINT op")
        try:
            result = op.fn(conn)
        except FATAL_ERRORS:
            raise
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return op, None, exc
        if not conn.in_transaction:
            raise TransactionLost("an operation ended the group's transaction")
        conn.execute("RELEASE op")
        return op, result, None

    def _fail_queued(self) -> None:
        fatal = StoreFatal(f"the store has failed: {self._failed}")
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item.future.set_running_or_notify_cancel():
                _settle(item, error=fatal)


class Readers:
    """Read connections, one per thread, each read one short transaction.

    Nothing holds a read transaction between calls, so checkpoints can always
    reset the WAL.
    """

    def __init__(self, path: Path):
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="reader")
        self._local = threading.local()
        self._all: list[apsw.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> apsw.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = apsw.Connection(str(self._path), flags=apsw.SQLITE_OPEN_READONLY)
            conn.setbusytimeout(10_000)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def call(self, fn: Callable[[apsw.Connection], T]) -> T:
        # Their own threads: hashing or a long listing on the default executor must not
        # keep `status` and `watch` waiting.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.read, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(apsw.Error):
                    conn.close()
            self._all.clear()


class Store:
    """The store as the daemon uses it: schema applied, a writer, readers."""

    def __init__(
        self,
        path: Path,
        on_fatal: Callable[[BaseException], None],
        kinds: Sequence[tuple[str, Schema]] = (),
    ):
        """`kinds`: each kind's tables, in the registry's order (`registry.schemas()`)."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        make_private(path)
        bootstrap = open_connection(path)
        try:
            self.version = apply_schema(bootstrap, kinds=kinds)
        finally:
            bootstrap.close()
        self.writer = Writer(path, on_fatal)
        self.readers = Readers(path)

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        self.writer.stop()
        self.readers.close()

    def file_sizes(self) -> tuple[int, int]:
        """Bytes of the database file and of its WAL."""

        def size(path: str) -> int:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return 0

        return size(str(self.path)), size(f"{self.path}-wal")
