"""The state store on real SQLite files: schema and migrations, machines, writer, readers.

Nothing is mocked. Each test builds its database in a temporary directory with
the daemon's own functions (`store.apply_schema`, `register.create_download_job`,
`files.*`) and checks the result through a second connection.
"""

import asyncio
import re
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from types import ModuleType

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkforge.daemon import app, jobs, registry, store
from bulkforge.daemon.cleaner import machine as zip_machine
from bulkforge.daemon.downloader import batches, files, register
from bulkforge.daemon.downloader import machine as file_machine
from bulkforge.daemon.downloader.machine import FileState
from bulkforge.daemon.downloader.manifest import FileEntry
from bulkforge.daemon.failures import Failure
from bulkforge.daemon.generator import machine as part_machine
from bulkforge.daemon.governor import Governor
from bulkforge.daemon.machines import IllegalTransition, TransitionConflict
from bulkforge.daemon.machines import batch as batch_machine
from bulkforge.daemon.machines import job as job_machine
from bulkforge.daemon.machines.batch import BatchState
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.pipeline import Services
from bulkforge.daemon.scenes import machine as scene_machine
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.transfer.engine import Engine

REPO = Path(__file__).resolve().parents[1]
SCHEMA_SQL = REPO / "schema.sql"
# Each kind's tables, in the registry's order, as bfd hands them to the store.
KIND_TABLES = registry.schemas()
MIGRATIONS = REPO / "daemon" / "migrations"
WAIT_S = 30.0  # a deadline for what must happen, only ever reached when it never does

# table in schema.sql -> the machine whose states its CHECK must list
MACHINES: dict[str, ModuleType] = {
    "jobs": job_machine,
    "files": file_machine,
    "batches": batch_machine,
    "scenes": scene_machine,
    "clean_zips": zip_machine,
    "generate_parts": part_machine,
}
STATE_ENUMS: dict[str, type[StrEnum]] = {
    "jobs": JobState,
    "files": FileState,
    "batches": BatchState,
    "scenes": scene_machine.SceneState,
    "clean_zips": zip_machine.ZipState,
    "generate_parts": part_machine.PartState,
}


# -- helpers ---------------------------------------------------------------------------------


def new_db(path: Path) -> apsw.Connection:
    conn = store.open_connection(path)
    store.apply_schema(conn, kinds=KIND_TABLES)
    return conn


def entries(count: int, prefix: str = "f", sized: bool = True) -> list[FileEntry]:
    """File rows for a job; every third one has no known size when `sized` is False."""
    return [
        FileEntry(
            url=f"http://127.0.0.1:9/{prefix}/{i}",
            path=f"{prefix}/{i:06d}.bin",
            size=None if (not sized and i % 3 == 0) else 100 + i,
            sha256=None,
            md5=None,
            etag=None,
        )
        for i in range(count)
    ]


def add_job(conn: apsw.Connection, name: str, count: int, sized: bool = True) -> jobs.JobRow:
    with conn:
        job, created = register.create_download_job(
            conn,
            name,
            {"kind": "download", "name": name},
            f"/srv/{name}",
            entries(count, name, sized),
        )
        # As the scheduler does when the job starts: its one batch becomes active.
        (batch,) = batches.in_states(conn, job.id, (batch_machine.BatchState.PLANNED,))
        batches.activate(conn, batch, Path("/"))
    assert created
    return job


def file_row(conn: apsw.Connection, file_id: int) -> files.FileRow:
    row = conn.execute(
        f"SELECT {files.CLAIM_COLUMNS} FROM files WHERE id = ?", (file_id,)
    ).fetchone()
    return files.FileRow(*row)


def ids_in(conn: apsw.Connection, job_id: int, state: FileState) -> list[int]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT id FROM files WHERE job_id = ? AND state = ? ORDER BY id", (job_id, str(state))
        )
    ]


def counts_from_triggers(conn: apsw.Connection) -> dict[tuple[int, str], tuple[int, int]]:
    rows = conn.execute("SELECT job_id, state, files, bytes FROM file_counts").fetchall()
    assert all(n >= 0 and b >= 0 for _, _, n, b in rows), f"negative counts: {rows}"
    return {(job, state): (n, b) for job, state, n, b in rows if n or b}


def counts_from_rows(conn: apsw.Connection) -> dict[tuple[int, str], tuple[int, int]]:
    return {
        (job, state): (n, b)
        for job, state, n, b in conn.execute(
            "SELECT job_id, state, count(*), coalesce(sum(size), 0) FROM files GROUP BY 1, 2"
        )
    }


def strip_sql(sql: str) -> str:
    """SQL text without comments, with whitespace collapsed and none around punctuation.

    sqlite_master keeps the text as written (comments included, and ALTER TABLE
    splices new columns in), so two equal schemas differ only in layout.
    """
    out = []
    for token in re.finditer(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|.", sql, re.S):
        text = token.group(0)
        if text.startswith("--") or text.startswith("/*"):
            out.append(" ")
        else:
            out.append(text)
    flat = re.sub(r"\s+", " ", "".join(out)).strip()
    return re.sub(r"\s*([(),;])\s*", r"\1", flat)


def schema_of(conn: apsw.Connection) -> list[tuple[str, str, str, str]]:
    return sorted(
        (kind, name, table, strip_sql(sql or ""))
        for kind, name, table, sql in conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        )
    )


def versions(conn: apsw.Connection) -> list[tuple[int, str]]:
    return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


def kind_versions(conn: apsw.Connection) -> list[tuple[str, int, str]]:
    return conn.execute(
        "SELECT kind, version, name FROM kind_migrations ORDER BY kind, version"
    ).fetchall()


def hold_writer(writer: store.Writer) -> tuple[threading.Event, Future]:
    """Occupy the writer with an op that waits; ops queued meanwhile form the next group."""
    entered, release = threading.Event(), threading.Event()

    def op(conn: apsw.Connection) -> None:
        entered.set()
        assert release.wait(WAIT_S), "the test never released the writer"

    held = writer.submit(op)
    assert entered.wait(WAIT_S), "the writer never ran the holding op"
    return release, held


@pytest.fixture
def db(tmp_path: Path) -> apsw.Connection:
    conn = new_db(tmp_path / "state.db")
    yield conn
    conn.close()


@pytest.fixture
def live_store(tmp_path: Path):
    """A started Store (schema applied, writer thread running), closed at teardown."""
    fatal: list[BaseException] = []
    opened = store.Store(tmp_path / "state.db", fatal.append, KIND_TABLES)
    opened.start()
    opened.fatal = fatal
    yield opened
    opened.close()
    assert not fatal, f"the store reported a fatal error: {fatal}"


def peek(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Read through a connection of its own, as another process would."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# -- schema and migrations -------------------------------------------------------------------


def test_fresh_store_equals_migrated_store(tmp_path: Path) -> None:
    fresh = new_db(tmp_path / "fresh.db")

    migrated = store.open_connection(tmp_path / "migrated.db")
    baseline = store.migrations()[0]
    assert baseline.version == 1
    # What bulkforge 0.1.0 left on disk: the baseline and its ledger row.
    with migrated:
        migrated.execute(baseline.sql)
        migrated.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (baseline.version, baseline.name, store.now_ms()),
        )
    latest = store.apply_schema(migrated, kinds=KIND_TABLES)

    assert latest == store.migrations()[-1].version
    assert schema_of(migrated) == schema_of(fresh), (
        "schema.sql and daemon/migrations/ disagree: a fresh store differs from a migrated one"
    )
    assert (
        versions(migrated) == versions(fresh) == [(m.version, m.name) for m in store.migrations()]
    )
    assert kind_versions(migrated) == kind_versions(fresh)
    assert [m.version for m in store.migrations()] == list(range(1, latest + 1)), (
        "migrations must be numbered 0001, 0002, ... without gaps"
    )


def test_apply_schema_is_idempotent(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "state.db")
    before = (schema_of(conn), versions(conn), kind_versions(conn))
    store.apply_schema(conn, kinds=KIND_TABLES)
    assert (schema_of(conn), versions(conn), kind_versions(conn)) == before


def test_store_newer_than_this_bfd_is_refused(db: apsw.Connection) -> None:
    with db:
        db.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 0)")
    with pytest.raises(store.SchemaTooNew, match="newer"):
        store.apply_schema(db)


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A migrations directory holding only the baseline, for tests to add a 0002 to."""
    copy = tmp_path / "migrations"
    copy.mkdir()
    (baseline,) = MIGRATIONS.glob("0001_*.sql")
    shutil.copyfile(baseline, copy / baseline.name)
    return copy


def baseline_db(path: Path, migrations_dir: Path) -> apsw.Connection:
    """A store as the first release created it: the baseline and its ledger row only."""
    conn = store.open_connection(path)
    baseline = store.migrations(migrations_dir)[0]
    with conn:
        conn.execute(baseline.sql)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
            (baseline.version, baseline.name, store.now_ms()),
        )
    return conn


def test_a_failing_migration_leaves_neither_its_change_nor_its_ledger_row(
    tmp_path: Path, migrations_dir: Path
) -> None:
    conn = baseline_db(tmp_path / "state.db", migrations_dir)
    before = schema_of(conn)
    # Half of it works, then it fails.
    (migrations_dir / "0002_half_done.sql").write_text(
        "CREATE TABLE half_done (x INTEGER);\n"
        "ALTER TABLE jobs ADD COLUMN half_done INTEGER;\n"
        "INSERT INTO no_such_table VALUES (1);\n"
    )
    with pytest.raises(apsw.SQLError, match="no_such_table"):
        store.apply_schema(conn, migrations_dir)
    assert schema_of(conn) == before
    assert [v for v, _ in versions(conn)] == [1]

    # Fixed, the same migration applies with its ledger row.
    (migrations_dir / "0002_half_done.sql").write_text("CREATE TABLE half_done (x INTEGER);\n")
    assert store.apply_schema(conn, migrations_dir) == 2
    assert [v for v, _ in versions(conn)] == [1, 2]
    assert peek(tmp_path / "state.db", "SELECT name FROM sqlite_master WHERE name = 'half_done'")


def test_a_migration_whose_ledger_row_fails_is_rolled_back(
    tmp_path: Path, migrations_dir: Path
) -> None:
    """The migration's own change commits only together with its ledger row."""
    conn = baseline_db(tmp_path / "state.db", migrations_dir)
    before = schema_of(conn)
    # The migration succeeds, but squats its own version so the ledger insert fails.
    (migrations_dir / "0002_squatter.sql").write_text(
        "CREATE TABLE made_by_0002 (x INTEGER);\n"
        "INSERT INTO schema_migrations VALUES (2, 'squatter', 0);\n"
    )
    with pytest.raises(apsw.ConstraintError):
        store.apply_schema(conn, migrations_dir)
    assert schema_of(conn) == before
    assert [v for v, _ in versions(conn)] == [1]


def store_at(path: Path, version: int, tmp_path: Path) -> apsw.Connection:
    """A store as the bfd whose latest migration was `version` left it."""
    older = tmp_path / f"migrations_{version}"
    older.mkdir()
    for migration in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"):
        if int(migration.name[:4]) <= version:
            shutil.copyfile(migration, older / migration.name)
    conn = store.open_connection(path)
    baseline = store.migrations()[0]
    with conn:
        conn.execute(baseline.sql)
        conn.execute("INSERT INTO schema_migrations VALUES (1, ?, 0)", (baseline.name,))
    assert store.apply_schema(conn, older) == version
    return conn


# A row in every table of a version-12 store (the last before jobs.kind lost its CHECK),
# children after their parents, with NULLs, odd text and large numbers where allowed; the
# count tables fill from their triggers. {job} and {file} stand for ids made before.
ROWS_AT_12 = [
    "INSERT INTO jobs (id, name, kind, state, spec, dest, message, created_at, updated_at) "
    "VALUES ({job}, 'j{n}', '{kind}', 'paused', '{{\"a\": [1, 2]}}', '/d/é{n}', "
    "'it''s paused', 1700000000000, 9007199254740993)",
    "INSERT INTO batches (job_id, idx, state, files, bytes, disk, updated_at, failures, "
    "started_at) VALUES ({job}, {n}, 'active', 3, 4294967296, 'fs:1 /mnt/a', 5, 1, NULL)",
    "INSERT INTO files (job_id, batch_idx, url, path, size, sha256, md5, etag, validator, "
    "state, attempts, retry_at, step, error_class, error, finished_at, updated_at, "
    "checksum_url, seen_sha256) VALUES ({job}, {n}, 'http://x/{n}', 'p/{n}', NULL, "
    "'{sha}', '{md5}', 'W/\"e\"', 'Tue, 01 Jan', 'failed', 2, 77, 'fetch', 'http', "
    "'HTTP 503', NULL, 6, 'http://x/{n}.CHECKSUM', NULL)",
    "INSERT INTO segments (file_id, idx, start, stop, done) VALUES ({file}, 0, 0, 7, 1)",
    "INSERT INTO scenes (job_id, key, url, meta, state, attempts, step, error_class, error, "
    "shard, size, finished_at, updated_at) VALUES ({job}, 'k{n}', NULL, '{{\"c\": 1}}', "
    "'done', 1, NULL, NULL, NULL, 0, 5, 8, 9)",
    "INSERT INTO scene_inputs (job_id, rows_total, rows_read, done, rejected, first_rejected) "
    "VALUES ({job}, 10, 4, 0, 1, 'row 3: no key')",
    "INSERT INTO clean_zips (job_id, path, series, first_day, last_day, size, mtime_ns, sha256, "
    "state, attempts, rows_in, rows_rejected, updated_at) VALUES ({job}, 'z{n}.zip', "
    "'market=spot/kind=trades/symbol=BTC', '2024-01-01', '2024-01-31', 1, "
    "1700000000123456789, NULL, 'running', 0, 12, 0, 0)",
    "INSERT INTO clean_inputs (job_id, outside, first_outside, filtered, seen_file_id) "
    "VALUES ({job}, 2, 'x/y.zip', 1, {file})",
    "INSERT INTO clean_partitions (dest, series, day, digest, rows) "
    "VALUES ('/d/{n}', 's', '2024-01-01', '{sha}', 0)",
    "INSERT INTO generate_parts (job_id, table_name, idx, start_row, rows, state, size, "
    "sha256, updated_at) VALUES ({job}, 't', {n}, 0, 1, 'done', 3, '{sha}', 0)",
]
KINDS_AT_12 = ("download", "scenes", "clean", "generate")


def fill_every_table(conn: apsw.Connection) -> None:
    with conn:
        for n, kind in enumerate(KINDS_AT_12 * 2):
            ids = {"job": 10 * n + 3, "file": None}
            for sql in ROWS_AT_12:
                conn.execute(sql.format(n=n, kind=kind, sha="ab" * 32, md5="cd" * 16, **ids))
                if sql.startswith("INSERT INTO files"):
                    ids["file"] = conn.last_insert_rowid()
        # Remove the newest job: the AUTOINCREMENT high-water mark is above every id left.
        newest = conn.execute("SELECT max(id) FROM jobs").fetchone()[0]
        for table in ("segments",):
            conn.execute(f"DELETE FROM {table} WHERE file_id IN "
                         "(SELECT id FROM files WHERE job_id = ?)", (newest,))  # fmt: skip
        for table in ("batches", "files", "scenes", "scene_inputs", "clean_zips",
                      "clean_inputs", "generate_parts"):  # fmt: skip
            conn.execute(f"DELETE FROM {table} WHERE job_id = ?", (newest,))
        conn.execute("DELETE FROM jobs WHERE id = ?", (newest,))


def every_row(conn: apsw.Connection) -> dict[str, list[tuple]]:
    """Each table's rows in a stable order, every value with its SQLite type."""
    tables = [
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    return {
        table: sorted(
            (
                tuple((type(v).__name__, v) for v in row)
                for row in conn.execute(f"SELECT * FROM {table}")
            ),
            key=repr,
        )
        for table in tables
    }


def test_upgrading_drops_the_jobs_kind_check_and_keeps_every_row(tmp_path: Path) -> None:
    """A store made by the schema before 0013, a row in every table: the rebuild of jobs
    keeps every row of every table byte for byte, the AUTOINCREMENT high-water mark, the
    foreign keys whole, and leaves the schema a fresh store has."""
    conn = store_at(tmp_path / "old.db", 12, tmp_path)
    fill_every_table(conn)
    before = every_row(conn)
    assert all(before[table] for table in before if table != "sqlite_sequence"), (
        f"a table of the version-12 store has no row to carry: {sorted(before)}"
    )
    with pytest.raises(apsw.ConstraintError, match="CHECK"), conn:
        conn.execute("INSERT INTO jobs (name, kind, spec, dest, created_at, updated_at) "
                     "VALUES ('copy', 'copy', '{}', '/d', 0, 0)")  # fmt: skip

    store.apply_schema(conn, kinds=KIND_TABLES)

    after = every_row(conn)
    # The kinds' tables, made by the core's migrations, are recorded at their baselines.
    assert [row[:3] for row in after.pop("kind_migrations")] == sorted(
        (("str", name), ("int", 1), ("str", "baseline")) for name in KINDS_AT_12
    )
    ledger = after.pop("schema_migrations")
    assert [row for row in ledger if row[0][1] <= 12] == before.pop("schema_migrations")
    assert [row[1][1] for row in ledger if row[0][1] > 12] == [
        m.name for m in store.migrations() if m.version > 12
    ]
    assert after == before
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert schema_of(conn) == schema_of(new_db(tmp_path / "fresh.db"))
    # A kind the schema never heard of is the registry's business now, and ids go on.
    top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()[0]
    assert top > conn.execute("SELECT max(id) FROM jobs").fetchone()[0]
    with conn:
        conn.execute("INSERT INTO jobs (name, kind, spec, dest, created_at, updated_at) "
                     "VALUES ('copy', 'copy', '{}', '/d', 0, 0)")  # fmt: skip
    assert conn.last_insert_rowid() == top + 1


def test_a_migration_leaving_an_orphan_is_rolled_back(tmp_path: Path, migrations_dir: Path) -> None:
    """Foreign keys are off while a migration runs (to rebuild a parent); the check before
    its commit refuses one that left a child without its parent."""
    conn = baseline_db(tmp_path / "state.db", migrations_dir)
    with conn:
        conn.execute("INSERT INTO jobs VALUES (1, 'j', 'download', 'queued', '{}', '/d', '', 0, 0)")
        conn.execute("INSERT INTO batches (job_id, idx, updated_at) VALUES (1, 0, 0)")
    before = (schema_of(conn), every_row(conn))
    (migrations_dir / "0002_orphans.sql").write_text(
        "CREATE TABLE made_by_0002 (x INTEGER);\nDELETE FROM jobs;\n"
    )
    with pytest.raises(store.ForeignKeysBroken, match="batches"):
        store.apply_schema(conn, migrations_dir)
    assert (schema_of(conn), every_row(conn)) == before
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)


@pytest.mark.parametrize("kind", [name for name, _ in KIND_TABLES])
def test_a_kind_migrated_from_its_baseline_equals_its_tables_sql(tmp_path: Path, kind: str) -> None:
    """Each kind's tables.sql agrees with its baseline and migrations, as schema.sql does
    with the core's: a store whose kind is at version 1 migrates to what a fresh one has."""
    fresh = new_db(tmp_path / "fresh.db")
    older = store.open_connection(tmp_path / "older.db")
    store.apply_schema(older, kinds=[entry for entry in KIND_TABLES if entry[0] != kind])
    tables = dict(KIND_TABLES)[kind]
    baseline = tables.migrations[0]
    assert (baseline.version, baseline.name) == (1, "baseline")
    with older:
        older.execute(baseline.sql)
        older.execute("INSERT INTO kind_migrations VALUES (?, 1, 'baseline', 0)", (kind,))
    store.apply_schema(older, kinds=KIND_TABLES)
    assert schema_of(older) == schema_of(fresh), (
        f"the {kind} kind's tables.sql and its migrations/ disagree"
    )
    assert kind_versions(older) == kind_versions(fresh)
    assert [m.version for m in tables.migrations] == list(range(1, len(tables.migrations) + 1))


def one_version(sql: str) -> store.Schema:
    return store.Schema(sql, [store.Migration(1, "baseline", sql)])


# A kind whose table another kind's trigger watches: made in the order given, or not at all.
PARENT_KIND = one_version(
    "CREATE TABLE a_items (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "job_id INTEGER NOT NULL REFERENCES jobs (id));"
)
CHILD_KIND = one_version(
    "CREATE TABLE b_seen (a_id INTEGER NOT NULL);\n"
    "CREATE TRIGGER b_sees_a AFTER INSERT ON a_items BEGIN "
    "INSERT INTO b_seen VALUES (NEW.id); END;"
)


def test_the_kinds_tables_are_made_in_the_order_given(tmp_path: Path) -> None:
    backwards = store.open_connection(tmp_path / "backwards.db")
    with pytest.raises(apsw.SQLError, match="a_items"):
        store.apply_schema(backwards, kinds=[("b", CHILD_KIND), ("a", PARENT_KIND)])
    conn = store.open_connection(tmp_path / "state.db")
    store.apply_schema(conn, kinds=[("a", PARENT_KIND), ("b", CHILD_KIND)])
    assert kind_versions(conn) == [("a", 1, "baseline"), ("b", 1, "baseline")]


def test_a_kind_new_to_a_store_gets_its_tables_and_nothing_else_changes(tmp_path: Path) -> None:
    conn = new_db(tmp_path / "state.db")
    fill(conn, 1)
    before = (schema_of(conn), every_row(conn))
    store.apply_schema(conn, kinds=[*KIND_TABLES, ("a", PARENT_KIND)])
    after = every_row(conn)
    assert [row[:3] for row in after.pop("kind_migrations")] == sorted(
        [row[:3] for row in before[1].pop("kind_migrations")]
        + [(("str", "a"), ("int", 1), ("str", "baseline"))]
    )
    assert after.pop("a_items") == []
    assert after == before[1]
    assert set(schema_of(conn)) - set(before[0]) == {
        ("table", "a_items", "a_items", strip_sql(PARENT_KIND.sql).rstrip(";"))
    }


def test_a_kinds_migrations_apply_once_each_with_its_ledger_row(tmp_path: Path) -> None:
    conn = store.open_connection(tmp_path / "state.db")
    store.apply_schema(conn, kinds=[("a", PARENT_KIND)])
    grown = store.Schema(
        PARENT_KIND.sql + "\nCREATE INDEX a_by_job ON a_items (job_id);",
        [
            *PARENT_KIND.migrations,
            store.Migration(2, "by_job", "CREATE INDEX a_by_job ON a_items (job_id);"),
        ],
    )
    broken = store.Schema(
        grown.sql,
        [
            *PARENT_KIND.migrations,
            store.Migration(2, "by_job", "CREATE INDEX a_by_job ON nothing (x);"),
        ],
    )
    with pytest.raises(apsw.SQLError, match="nothing"):
        store.apply_schema(conn, kinds=[("a", broken)])
    assert kind_versions(conn) == [("a", 1, "baseline")]
    for _ in range(2):
        store.apply_schema(conn, kinds=[("a", grown)])
        assert kind_versions(conn) == [("a", 1, "baseline"), ("a", 2, "by_job")]
    fresh = store.open_connection(tmp_path / "fresh.db")
    store.apply_schema(fresh, kinds=[("a", grown)])
    assert (schema_of(conn), kind_versions(conn)) == (schema_of(fresh), kind_versions(fresh))


def test_a_kinds_tables_newer_than_this_bfd_are_refused(db: apsw.Connection) -> None:
    kind, tables = KIND_TABLES[-1]
    latest = tables.migrations[-1].version
    with db:
        db.execute(
            "INSERT INTO kind_migrations VALUES (?, ?, 'from_the_future', 0)", (kind, latest + 1)
        )
    with pytest.raises(
        store.SchemaTooNew, match=f"{kind} tables are at schema version {latest + 1}"
    ):
        store.apply_schema(db, kinds=KIND_TABLES)


# -- state machines --------------------------------------------------------------------------


def check_states(table: str) -> list[str]:
    """The `CHECK (state IN (...))` list of a table, parsed from schema.sql or the
    tables.sql of the kind that owns it."""
    sql = "\n".join([SCHEMA_SQL.read_text(), *(tables.sql for _, tables in KIND_TABLES)])
    body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", sql, re.S)
    assert body, f"no CREATE TABLE {table} in schema.sql or a kind's tables.sql"
    check = re.search(r"CHECK \(state IN \((.*?)\)\)", body.group(1), re.S)
    assert check, f"schema.sql: {table}.state has no CHECK (state IN (...))"
    return re.findall(r"'([^']*)'", check.group(1))


@pytest.mark.parametrize("table", sorted(STATE_ENUMS))
def test_machine_states_equal_the_schema_check(table: str) -> None:
    listed = check_states(table)
    states = [str(state) for state in STATE_ENUMS[table]]
    assert len(listed) == len(set(listed)), f"{table}: duplicate states in the CHECK {listed}"
    assert set(listed) == set(states), (
        f"{table}: schema.sql CHECK lists {listed}, the machine has {states}"
    )


@pytest.mark.parametrize("table", sorted(STATE_ENUMS))
def test_the_database_enforces_the_state_check(db: apsw.Connection, table: str) -> None:
    """The CHECK parsed above is the one SQLite applies."""
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    assert sorted(check_states(table)) == sorted(
        re.findall(r"'([^']*)'", re.search(r"state IN \((.*?)\)\)", sql, re.S).group(1))
    )
    job = add_job(db, "enforced", 1)
    with db:
        db.execute("INSERT INTO scenes (job_id, key, updated_at) VALUES (?, 'k', 0)", (job.id,))
        db.execute(
            "INSERT INTO clean_zips (job_id, path, series, first_day, last_day, size, mtime_ns, "
            "updated_at) VALUES (?, 'z.zip', 's', '2024-01-01', '2024-01-01', 1, 0, 0)",
            (job.id,),
        )
        db.execute(
            "INSERT INTO generate_parts (job_id, table_name, idx, start_row, rows, updated_at) "
            "VALUES (?, 't', 0, 0, 1, 0)",
            (job.id,),
        )
    assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 1
    with pytest.raises(apsw.ConstraintError), db:
        db.execute(f"UPDATE {table} SET state = 'bogus'")


@pytest.mark.parametrize("table", sorted(MACHINES))
def test_moves_are_between_members_of_the_machine(table: str) -> None:
    machine, states = MACHINES[table], STATE_ENUMS[table]
    assert machine.MOVES, f"{table}: empty MOVES"
    for old, new in machine.MOVES:
        assert isinstance(old, states) and isinstance(new, states), (old, new)
        assert old != new, f"{table}: a move from {old} to itself"


@pytest.mark.parametrize("table", sorted(MACHINES))
def test_check_transition_allows_exactly_the_table(table: str) -> None:
    machine, states = MACHINES[table], STATE_ENUMS[table]
    for old in states:
        for new in states:
            if (old, new) in machine.MOVES:
                machine.check_transition(old, new)
            else:
                with pytest.raises(IllegalTransition):
                    machine.check_transition(old, new)


@pytest.mark.parametrize(
    ("check", "old", "new"),
    [
        (job_machine.check_transition, JobState.COMPLETED, JobState.RUNNING),
        (job_machine.check_transition, JobState.CANCELLED, JobState.QUEUED),
        (file_machine.check_transition, FileState.DONE, FileState.DOWNLOADING),
        (file_machine.check_transition, FileState.PENDING, FileState.DONE),
        (batch_machine.check_transition, BatchState.ARCHIVED, BatchState.ACTIVE),
        (
            scene_machine.check_transition,
            scene_machine.SceneState.DONE,
            scene_machine.SceneState.PENDING,
        ),
    ],
)
def test_named_illegal_moves_raise(check, old, new) -> None:
    with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
        check(old, new)


# -- guarded_update --------------------------------------------------------------------------


def job_row(conn: apsw.Connection, job_id: int) -> tuple:
    return conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()


def test_guarded_update_applies_a_legal_move(db: apsw.Connection) -> None:
    job = add_job(db, "legal", 1)
    with db:
        store.guarded_update(
            db,
            "jobs",
            job.id,
            JobState.QUEUED,
            JobState.RUNNING,
            job_machine.check_transition,
            message="started",
            updated_at=123,
        )
    assert db.execute("SELECT state, message, updated_at FROM jobs").fetchone() == (
        "running",
        "started",
        123,
    )


def test_guarded_update_conflict_leaves_the_row_unchanged(db: apsw.Connection) -> None:
    job = add_job(db, "conflict", 1)
    with db:
        db.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (job.id,))
    before = job_row(db, job.id)
    with pytest.raises(TransitionConflict), db:
        store.guarded_update(
            db,
            "jobs",
            job.id,
            JobState.QUEUED,
            JobState.RUNNING,
            job_machine.check_transition,
            message="must not land",
        )
    assert job_row(db, job.id) == before
    with pytest.raises(TransitionConflict), db:
        store.guarded_update(
            db,
            "jobs",
            job.id + 100,
            JobState.RUNNING,
            JobState.PAUSED,
            job_machine.check_transition,
        )


def test_guarded_update_refuses_an_illegal_move_before_writing(db: apsw.Connection) -> None:
    job = add_job(db, "illegal", 1)
    with db:
        db.execute("UPDATE jobs SET state = 'completed' WHERE id = ?", (job.id,))
    before, changes = job_row(db, job.id), db.total_changes()
    # The row *is* completed, so only the machine check stands between it and the write.
    with pytest.raises(IllegalTransition), db:
        store.guarded_update(
            db,
            "jobs",
            job.id,
            JobState.COMPLETED,
            JobState.RUNNING,
            job_machine.check_transition,
            message="must not land",
        )
    assert db.total_changes() == changes
    assert job_row(db, job.id) == before
    (file_id,) = ids_in(db, job.id, FileState.PENDING)
    with db:
        db.execute("UPDATE files SET state = 'done' WHERE id = ?", (file_id,))
    changes = db.total_changes()
    with pytest.raises(IllegalTransition), db:
        store.guarded_update(
            db,
            "files",
            file_id,
            FileState.DONE,
            FileState.DOWNLOADING,
            file_machine.check_transition,
        )
    assert db.total_changes() == changes


def test_a_set_move_moves_its_rows_and_counts_them(db: apsw.Connection) -> None:
    job = add_job(db, "set", 6)
    ids = ids_in(db, job.id, FileState.PENDING)
    with db:
        db.execute("UPDATE files SET state = 'downloading' WHERE id = ?", (ids[0],))
    with db:
        moved = store.guarded_update_where(
            db,
            "files",
            FileState.PENDING,
            FileState.SKIPPED,
            file_machine.check_transition,
            "job_id = ? AND id <= ?",
            (job.id, ids[3]),
            expected=3,
            updated_at=7,
        )
    # The row already downloading is not in the set: the three others are.
    assert moved == 3
    assert ids_in(db, job.id, FileState.SKIPPED) == ids[1:4]
    assert ids_in(db, job.id, FileState.DOWNLOADING) == [ids[0]]


def test_a_set_move_short_of_its_expected_rows_fails_whole(db: apsw.Connection) -> None:
    job = add_job(db, "short", 4)
    ids = ids_in(db, job.id, FileState.PENDING)
    with db:
        db.execute("UPDATE files SET state = 'downloading' WHERE id = ?", (ids[0],))
    with pytest.raises(TransitionConflict, match="3 of 4 rows"), db:
        store.guarded_update_where(
            db,
            "files",
            FileState.PENDING,
            FileState.SKIPPED,
            file_machine.check_transition,
            "job_id = ?",
            (job.id,),
            expected=4,
        )
    assert ids_in(db, job.id, FileState.PENDING) == ids[1:]
    with pytest.raises(IllegalTransition), db:
        store.guarded_update_where(
            db, "files", FileState.PENDING, FileState.DONE, file_machine.check_transition, "1"
        )
    assert ids_in(db, job.id, FileState.PENDING) == ids[1:]


def test_each_row_its_own_move_all_or_nothing(db: apsw.Connection) -> None:
    job = add_job(db, "each", 3)
    ids = ids_in(db, job.id, FileState.PENDING)
    moves = [
        (FileState.SKIPPED, ids[0], (1,)),
        (FileState.FAILED, ids[1], (2,)),
        (FileState.SKIPPED, ids[2], (3,)),
    ]
    with db:
        db.execute("UPDATE files SET state = 'downloading' WHERE id = ?", (ids[2],))
    with pytest.raises(TransitionConflict, match="1 of 3 rows"), db:
        store.guarded_update_each(
            db, "files", FileState.PENDING, file_machine.check_transition, ("updated_at",), moves
        )
    assert ids_in(db, job.id, FileState.PENDING) == ids[:2]
    with db:
        moved = store.guarded_update_each(
            db,
            "files",
            FileState.PENDING,
            file_machine.check_transition,
            ("updated_at",),
            moves,
            require_all=False,
        )
    assert moved == ids[:2]
    assert ids_in(db, job.id, FileState.SKIPPED) == [ids[0]]
    assert ids_in(db, job.id, FileState.FAILED) == [ids[1]]
    assert db.execute("SELECT updated_at FROM files WHERE id = ?", (ids[1],)).fetchone() == (2,)
    with pytest.raises(IllegalTransition), db:
        store.guarded_update_each(
            db,
            "files",
            FileState.FAILED,
            file_machine.check_transition,
            (),
            [(FileState.DONE, ids[1], ())],
        )


# -- the writer ------------------------------------------------------------------------------


def make_table(live_store: store.Store) -> None:
    live_store.writer.call_sync(
        lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, thread INTEGER)")
    )


def insert(key: str):
    return lambda conn: conn.execute("INSERT INTO t (k) VALUES (?)", (key,))


def keys(path: Path) -> set[str]:
    return {k for (k,) in peek(path, "SELECT k FROM t")}


def test_futures_resolve_only_after_their_commit(live_store: store.Store) -> None:
    make_table(live_store)
    writer, path = live_store.writer, live_store.path
    release, held = hold_writer(writer)
    first = writer.submit(insert("first"))
    # The second op of the same group waits, so the group's commit cannot happen yet.
    second_entered, second_release = threading.Event(), threading.Event()

    def second(conn: apsw.Connection) -> str:
        conn.execute("INSERT INTO t (k) VALUES ('second')")
        second_entered.set()
        assert second_release.wait(WAIT_S)
        return "second"

    second_future = writer.submit(second)
    release.set()
    held.result(WAIT_S)
    assert second_entered.wait(WAIT_S)
    # `first` has run but its transaction is open: not acknowledged, not visible. A writer
    # that acknowledged each op as it ran would have resolved it before `second` began.
    assert not first.done()
    assert keys(path) == set()
    second_release.set()
    first.result(WAIT_S)
    assert keys(path) == {"first", "second"}
    assert second_future.result(WAIT_S) == "second"


def test_every_future_sees_its_row_committed_when_it_resolves(live_store: store.Store) -> None:
    """Checked inside the done-callback, i.e. at the instant the future resolves."""
    make_table(live_store)
    writer, readers = live_store.writer, live_store.readers
    invisible: list[str] = []

    def check(key: str):
        def on_done(future: Future) -> None:
            found = readers.read(
                lambda c: c.execute("SELECT count(*) FROM t WHERE k = ?", (key,)).fetchone()[0]
            )
            if future.exception() is not None or found != 1:
                invisible.append(key)

        return on_done

    futures = []
    for i in range(300):
        future = writer.submit(insert(f"k{i}"))
        future.add_done_callback(check(f"k{i}"))
        futures.append(future)
    for future in futures:
        future.result(WAIT_S)
    assert invisible == []


def test_an_op_that_raises_is_rolled_back_alone(live_store: store.Store) -> None:
    make_table(live_store)
    writer, path = live_store.writer, live_store.path
    release, held = hold_writer(writer)

    def raises(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO t (k) VALUES ('bad')")
        raise ValueError("op failed after writing")

    def conflicts(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO t (k) VALUES ('bad2')")
        conn.execute("INSERT INTO t (k) VALUES ('a')")  # primary key taken earlier in the group

    group = [
        writer.submit(insert("a")),
        writer.submit(raises),
        writer.submit(insert("b")),
        writer.submit(conflicts),
        writer.submit(insert("c")),
    ]
    commits = writer.commits
    release.set()
    held.result(WAIT_S)
    for future in group:
        future.exception(WAIT_S)
    assert writer.commits == commits + 2, "the holding op and the group: two commits"
    assert isinstance(group[1].exception(), ValueError)
    assert isinstance(group[3].exception(), apsw.ConstraintError)
    assert [f.exception() for f in (group[0], group[2], group[4])] == [None] * 3
    assert keys(path) == {"a", "b", "c"}


def test_ops_from_many_threads_are_group_committed(live_store: store.Store) -> None:
    make_table(live_store)
    writer = live_store.writer
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)
    commits, operations = writer.commits, writer.operations

    def produce(index: int) -> None:
        start.wait()
        for i in range(per_thread):
            writer.call_sync(
                lambda c, i=i: c.execute(
                    "INSERT INTO t (k, thread) VALUES (?, ?)", (f"{index}-{i}", index)
                )
            )

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done_ops = writer.operations - operations
    done_commits = writer.commits - commits
    assert done_ops == threads * per_thread
    assert done_commits < done_ops, f"{done_commits} commits for {done_ops} ops: no grouping"
    assert len(keys(live_store.path)) == threads * per_thread
    assert writer.commit_p99_ms() > 0


def test_stop_commits_everything_queued(tmp_path: Path) -> None:
    fatal: list[BaseException] = []
    opened = store.Store(tmp_path / "state.db", fatal.append, KIND_TABLES)
    opened.start()
    opened.writer.call_sync(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY)"))
    release, held = hold_writer(opened.writer)
    queued = [opened.writer.submit(insert(f"k{i}")) for i in range(2000)]
    release.set()
    opened.close()
    assert all(future.done() for future in queued)
    assert [future.exception() for future in queued] == [None] * len(queued)
    assert held.exception() is None
    assert keys(tmp_path / "state.db") == {f"k{i}" for i in range(2000)}
    assert not fatal


def test_readers_do_not_wait_on_the_writer(live_store: store.Store) -> None:
    writer, readers = live_store.writer, live_store.readers
    writer.call_sync(
        lambda c: c.execute("CREATE TABLE counter (v INTEGER); INSERT INTO counter VALUES (1)")
    )
    entered, release = threading.Event(), threading.Event()

    def held_open(conn: apsw.Connection) -> None:
        conn.execute("UPDATE counter SET v = 2")
        entered.set()
        assert release.wait(WAIT_S), "the test never released the writer"

    held = writer.submit(held_open)
    assert entered.wait(WAIT_S)
    # The writer's transaction stays open until the read has answered: a read that waited
    # on it would never answer.
    with ThreadPoolExecutor(1) as pool:
        read = pool.submit(readers.read, lambda c: c.execute("SELECT v FROM counter").fetchone())
        try:
            (value,) = read.result(WAIT_S)
        finally:
            release.set()
    assert value == 1, "a read must see the last committed value, not the open transaction"
    held.result(WAIT_S)
    assert readers.read(lambda c: c.execute("SELECT v FROM counter").fetchone()[0]) == 2


# -- file counts kept by triggers ------------------------------------------------------------


def test_file_counts_follow_the_transfer_moves(db: apsw.Connection) -> None:
    job = add_job(db, "moves", 20, sized=False)
    other = add_job(db, "other", 5)
    now = store.now_ms()
    with db:
        claimed = files.claim(db, job.id, 10, now)
    assert len(claimed) == 10
    with db:
        for row in claimed[:6]:
            files.to_verifying(db, row.id, None)
        for row in claimed[:3]:
            files.to_done(db, {row.id: (4096, None)})
        files.to_failed(
            db, claimed[3], FileState.VERIFYING, Failure("verify", "checksum", "x", True), now
        )
        files.to_failed(
            db,
            claimed[6],
            FileState.DOWNLOADING,
            Failure("fetch", "http_404", "y", False),
            None,
        )
    assert counts_from_triggers(db) == counts_from_rows(db)
    with db:
        assert files.retry_failed(db, job.id, "", "") == 2
    assert counts_from_triggers(db) == counts_from_rows(db)
    states = {state: n for (j, state), (n, _) in counts_from_triggers(db).items() if j == job.id}
    assert states == {"pending": 12, "downloading": 3, "verifying": 2, "done": 3}
    assert counts_from_triggers(db)[(other.id, "pending")] == (5, sum(100 + i for i in range(5)))


# "resize": the size learned mid-transfer (Content-Length) changes bytes without a move.
ACTIONS = ("claim", "verify", "done", "fail", "release", "retry", "repair", "add", "resize")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(ACTIONS), st.integers(0, 1 << 30), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_file_counts_equal_group_by_over_random_legal_moves(steps) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        conn = new_db(Path(tmp) / "state.db")
        try:
            job_ids = [add_job(conn, "a", 12, sized=False).id, add_job(conn, "b", 4).id]
            added = 0
            for action, seed, flag in steps:
                job_id = job_ids[seed % 2]
                with conn:
                    added = apply_action(conn, job_id, action, seed, flag, added)
                assert counts_from_triggers(conn) == counts_from_rows(conn), (action, seed)
        finally:
            conn.close()


def apply_action(
    conn: apsw.Connection, job_id: int, action: str, seed: int, flag: bool, added: int
) -> int:
    """One legal move (or none when no row is in the needed state)."""

    def pick(*states: FileState) -> tuple[int, FileState] | None:
        rows = [(i, s) for s in states for i in ids_in(conn, job_id, s)]
        return rows[seed % len(rows)] if rows else None

    now = store.now_ms()
    if action == "claim":
        files.claim(conn, job_id, 1 + seed % 4, now)
    elif action == "verify" and (found := pick(FileState.DOWNLOADING)):
        files.to_verifying(conn, found[0], None)
    elif action == "done" and (found := pick(FileState.VERIFYING)):
        files.to_done(conn, {found[0]: (seed % 10_000, None)})
    elif action == "fail" and (found := pick(FileState.DOWNLOADING, FileState.VERIFYING)):
        failure = Failure("fetch", "timeout", "slow", flag)
        files.to_failed(
            conn, file_row(conn, found[0]), found[1], failure, now - 1 if flag else None
        )
    elif action == "release" and (found := pick(FileState.DOWNLOADING, FileState.VERIFYING)):
        files.to_pending(conn, found[0], found[1])
    elif action == "retry":
        files.retry_failed(conn, job_id, "fetch" if flag else "", "")
    elif action == "repair":
        files.repair_in_flight(conn)
    elif action == "resize" and (found := pick(*FileState)):
        conn.execute(
            "UPDATE files SET size = ? WHERE id = ?", (seed % 700 if flag else None, found[0])
        )
    elif action == "add":
        added += 1
        conn.execute(
            "INSERT INTO files (job_id, url, path, size, updated_at) VALUES (?, ?, ?, ?, ?)",
            (job_id, "http://127.0.0.1:9/x", f"added/{added}", seed % 500 if flag else None, now),
        )
    return added


# -- boot repair -----------------------------------------------------------------------------


def test_repair_in_flight_moves_downloading_and_verifying_to_pending(db: apsw.Connection) -> None:
    job = add_job(db, "repair", 10)
    with db:
        claimed = files.claim(db, job.id, 6, store.now_ms())
        for row in claimed[:3]:
            files.to_verifying(db, row.id, None)
        files.to_done(db, {claimed[0].id: (1, None)})
    in_flight = set(ids_in(db, job.id, FileState.DOWNLOADING)) | set(
        ids_in(db, job.id, FileState.VERIFYING)
    )
    assert len(in_flight) == 5
    with db:
        assert files.repair_in_flight(db) == 5
    assert (
        ids_in(db, job.id, FileState.DOWNLOADING) == ids_in(db, job.id, FileState.VERIFYING) == []
    )
    assert in_flight <= set(ids_in(db, job.id, FileState.PENDING))
    assert ids_in(db, job.id, FileState.DONE) == [claimed[0].id]
    assert counts_from_triggers(db) == counts_from_rows(db)
    with db:
        assert files.repair_in_flight(db) == 0


def test_boot_repair_through_the_writer(live_store: store.Store) -> None:
    """What `run()` does first: files in flight back to pending, verifying batches to active."""
    writer = live_store.writer
    job = writer.call_sync(
        lambda c: register.create_download_job(c, "boot", {"n": 1}, "/srv/boot", entries(8))[0]
    )
    writer.call_sync(lambda c: files.claim(c, job.id, 4, store.now_ms()))
    writer.call_sync(
        lambda c: c.execute("UPDATE batches SET state = 'verifying' WHERE job_id = ?", (job.id,))
    )
    settings = Settings(state_dir=live_store.path.parent, socket=live_store.path.parent / "s")
    governor = Governor(0, settings.disk_threshold, 0, 1)
    engine = Engine(settings, governor)
    kinds = registry.build(Services(settings, live_store, governor, engine))
    writer.call_sync(lambda c: app._boot_repair(c, kinds))
    governor.close()
    assert peek(live_store.path, "SELECT state, count(*) FROM files GROUP BY 1") == [("pending", 8)]
    assert peek(live_store.path, "SELECT state FROM batches") == [("active",)]


# -- a fatal I/O error -----------------------------------------------------------------------


def test_a_full_disk_stops_the_writer(tmpfs) -> None:
    tiny_disk = tmpfs("tiny", "1m")  # so the store can really run out of space
    fatal: list[BaseException] = []
    opened = store.Store(tiny_disk / "state.db", fatal.append, KIND_TABLES)
    opened.start()
    writer = opened.writer
    try:
        writer.call_sync(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, b BLOB)"))
        release, held = hold_writer(writer)
        group = [
            writer.submit(insert("before")),
            writer.submit(
                lambda c: c.execute("INSERT INTO t VALUES ('huge', randomblob(8 * 1024 * 1024))")
            ),
            writer.submit(insert("after")),
        ]
        release.set()
        for future in group:
            assert isinstance(future.exception(WAIT_S), store.StoreFatal), future.exception()
        assert len(fatal) == 1 and isinstance(fatal[0], store.FATAL_ERRORS), fatal
        assert not writer.alive

        later = writer.submit(insert("later"))
        assert later.done(), "a submit to a stopped writer must fail at once, not queue"
        assert isinstance(later.exception(), store.StoreFatal)
        with pytest.raises(store.StoreFatal):
            writer.call_sync(insert("later2"))
        # Nothing of the failed group landed.
        assert keys(tiny_disk / "state.db") == set()
        assert held.exception() is None
    finally:
        opened.close()


# -- defects found and fixed: a cancelled caller, a lost transaction, a stopped writer ----


def test_an_op_that_ends_the_transaction_does_not_hang_the_writer(live_store: store.Store) -> None:
    make_table(live_store)
    writer = live_store.writer
    writer.call_sync(insert("taken"))
    bad = writer.submit(lambda c: c.execute("INSERT OR ROLLBACK INTO t (k) VALUES ('taken')"))
    assert bad.exception(WAIT_S) is not None
    later = writer.submit(insert("later"))
    assert later.exception(WAIT_S) is None
    assert keys(live_store.path) == {"taken", "later"}


def test_submit_after_stop_fails_at_once(tmp_path: Path) -> None:
    opened = store.Store(tmp_path / "state.db", lambda exc: None, KIND_TABLES)
    opened.start()
    opened.close()
    late = opened.writer.submit(lambda c: 1)
    assert late.done(), "a submit after stop must fail at once, not queue"
    assert isinstance(late.exception(), store.StoreFatal)


def test_a_cancelled_call_does_not_kill_the_writer(live_store: store.Store) -> None:
    """A transfer cancelled by pause, cancel or drain while it awaits its commit."""
    writer = live_store.writer

    async def cancel_one_call() -> None:
        release, held = hold_writer(writer)
        call = asyncio.create_task(writer.call(lambda c: "committed"))
        while writer.queue_depth == 0:  # until the call has queued its op
            await asyncio.sleep(0)
        call.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        held.result(WAIT_S)

    asyncio.run(cancel_one_call())
    assert writer.submit(lambda c: "later").result(WAIT_S) == "later"
    assert writer.alive


# -- ids are never reused --------------------------------------------------------------------

# A row for each table whose rows a removal deletes, children after their parents; {job}
# and {file} stand for the ids of the rows made before.
ID_TABLE_ROWS = {
    "jobs": "INSERT INTO jobs (name, kind, spec, dest, created_at, updated_at) "
    "VALUES ('j{n}', 'download', '{{}}', '/d', 0, 0)",
    "batches": "INSERT INTO batches (job_id, idx, updated_at) VALUES ({job}, {n}, 0)",
    "files": "INSERT INTO files (job_id, url, path, size, state, updated_at) "
    "VALUES ({job}, 'http://x/{n}', 'p{n}', 7, 'pending', 0)",
    "segments": "INSERT INTO segments (file_id, idx, start, stop) VALUES ({file}, 0, 0, 7)",
    "scenes": "INSERT INTO scenes (job_id, key, size, state, updated_at) "
    "VALUES ({job}, 'k{n}', 5, 'done', 0)",
    "clean_zips": "INSERT INTO clean_zips (job_id, path, series, first_day, last_day, size, "
    "mtime_ns, updated_at) VALUES ({job}, 'z{n}', 's', '2024-01-01', '2024-01-01', 1, 0, 0)",
    "generate_parts": "INSERT INTO generate_parts (job_id, table_name, idx, start_row, rows, "
    "updated_at) VALUES ({job}, 't', {n}, 0, 1, 0)",
}


def fill(conn: apsw.Connection, n: int) -> None:
    """One row in every table of ID_TABLE_ROWS, tied to a job of its own."""
    with conn:
        ids = {}
        for table, sql in ID_TABLE_ROWS.items():
            conn.execute(sql.format(n=n, **ids))
            ids[{"jobs": "job", "files": "file"}.get(table, table)] = conn.last_insert_rowid()


def tables_with_ids(conn: apsw.Connection) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        if any(col[1] == "id" and col[5] for col in conn.execute(f"PRAGMA table_info({name})"))
    ]


def test_every_table_with_an_id_is_covered(db: apsw.Connection) -> None:
    """A new table with an id must join the table of cases below (and be AUTOINCREMENT)."""
    assert set(tables_with_ids(db)) <= set(ID_TABLE_ROWS)


@pytest.mark.parametrize("migrated", [False, True], ids=["fresh", "migrated"])
def test_no_id_is_reused_after_the_max_row_is_deleted(tmp_path: Path, migrated: bool) -> None:
    """For every table with an id: delete the row holding the highest id (as `remove`
    does, through jobs.remove_job), insert a new one: it gets a higher id, in a fresh
    store and in one migrated from before ids were AUTOINCREMENT."""
    if migrated:
        conn = store.open_connection(tmp_path / "old.db")
        older = tmp_path / "older"
        older.mkdir()
        for path in sorted(MIGRATIONS.glob("000[0-9]_*.sql")):
            shutil.copyfile(path, older / path.name)
        baseline = store.migrations()[0]
        with conn:
            conn.execute(baseline.sql)
            conn.execute("INSERT INTO schema_migrations VALUES (1, ?, 0)", (baseline.name,))
        assert store.apply_schema(conn, older) == 9
    else:
        conn = new_db(tmp_path / "fresh.db")
    fill(conn, 1)
    fill(conn, 2)
    counts_before = conn.execute("SELECT * FROM file_counts ORDER BY job_id").fetchall()
    scene_counts_before = conn.execute("SELECT * FROM scene_counts ORDER BY job_id").fetchall()
    if migrated:
        store.apply_schema(conn, kinds=KIND_TABLES)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        # The triggers' counts neither doubled nor vanished while the tables were rebuilt.
        assert conn.execute("SELECT * FROM file_counts ORDER BY job_id").fetchall() == (
            counts_before
        )
        assert conn.execute("SELECT * FROM scene_counts ORDER BY job_id").fetchall() == (
            scene_counts_before
        )
    highest = {table: conn.execute(f"SELECT max(id) FROM {table}").fetchone()[0]
               for table in tables_with_ids(conn)}  # fmt: skip
    with conn:
        jobs.remove_job(conn, jobs.find_job(conn, "j2"))
    assert all(
        conn.execute(f"SELECT max(id) FROM {table}").fetchone()[0] < top
        for table, top in highest.items()
    ), "the removal left a row of the job behind"
    fill(conn, 3)
    for table, top in highest.items():
        (now,) = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
        assert now > top, f"{table}: the deleted id {top} was given again"
    conn.close()


def test_rebuilding_batches_keeps_their_ids_never_reused(tmp_path: Path) -> None:
    """Migration 0012 rebuilds batches: the id of a batch deleted before it is not given again."""
    older = tmp_path / "migrations"
    older.mkdir()
    for migration in MIGRATIONS.glob("00*.sql"):
        if int(migration.name[:4]) <= 11:
            shutil.copyfile(migration, older / migration.name)
    conn = baseline_db(tmp_path / "state.db", older)  # 0001, then 0002…0011 as an upgrade
    assert store.apply_schema(conn, older) == 11
    with conn:
        conn.execute(
            "INSERT INTO jobs (name, kind, spec, dest, created_at, updated_at) "
            "VALUES ('j', 'download', '{}', '/d', 0, 0)"
        )
        for idx in range(3):
            conn.execute("INSERT INTO batches (job_id, idx, updated_at) VALUES (1, ?, 0)", (idx,))
        conn.execute("DELETE FROM batches WHERE idx = 2")  # the highest id, 3, is gone
    store.apply_schema(conn)
    with conn:
        conn.execute("INSERT INTO batches (job_id, idx, updated_at) VALUES (1, 7, 0)")
    (new_id,) = conn.execute("SELECT id FROM batches WHERE idx = 7").fetchone()
    assert new_id == 4
