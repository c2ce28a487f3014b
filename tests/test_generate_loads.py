"""Generated tables load the way people load them (issue 25).

The rules, each checked on what a real bfd wrote, read by the tools people use:
- every format keeps the spec's column order, the primary key first, equal to schema.sql;
- the SQL output's load.sql loads everything parents first with every foreign key enforced,
  run by the dialect's own client: sqlite3 here always, PostgreSQL 15 and MariaDB 10.11 when
  installed (tests/sqlservers.py starts them); `\\copy ... CSV HEADER` of the CSV output
  goes into the generated schema;
- every key column has its foreign key, natural unique keys are declared, a time of day is
  a TIME, MySQL tables are InnoDB utf8mb4 with table-level FOREIGN KEYs, and Parquet marks
  never-null columns required;
- a table's folder reads with pyarrow.dataset, pandas, polars and DuckDB with no options;
- --sql-dialect with another format is refused by bfctl (exit 2) and by bfd.
"""

import csv
import json
import re
import shutil
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import duckdb
import grpc
import pandas
import polars
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import FAST_RETRIES, Daemon
from sqlservers import mariadb, postgres  # noqa: F401 (fixtures)

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.request import PRESETS_DIR, SubmitGenerate
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

# Names out of alphabetical order, keys in the middle, a child that sorts before its parent,
# a time of day, a declared reference and natural keys of cycles.
SHUFFLED = """
tables:
  z_parent:
    rows: 7
    columns:
      label: {kind: pattern, pattern: "P[A-Z]{3}", unique: true}
      parent_id: {kind: sequence, primary_key: true, start: 10, step: 5}
      opens_at: {kind: choice, values: ["07:30", "12:00", "18:15:30"], type: time}
  a_child:
    scale: 1.0
    columns:
      zz_note: {kind: word, "null": 0.3}
      parent: {kind: foreign_key, table: z_parent, column: parent_id}
      child_id: {kind: sequence, primary_key: true}
      band: {kind: cycle, values: [10, 15, 20], references: {table: z_parent, column: parent_id}}
      parent_label: {kind: lookup, via: parent, column: label}
      amount: {kind: float, min: 0, max: 100, digits: 2}
  m_pair:
    rows: 12
    unique: [[x, y]]
    columns:
      x: {kind: cycle, values: [a, b, c]}
      pair_id: {kind: sequence, primary_key: true}
      y: {kind: cycle, values: [1, 2, 3, 4]}
"""
SPECS = {
    "courses": (PRESETS_DIR / "courses.toml").read_text(),
    "shuffled": SHUFFLED,
}
ROWS = {"courses": 400, "shuffled": 300}
CHUNK_ROWS = 150  # several parts a table: the load script lists each
DIALECTS = ("sqlite", "postgres", "mysql")
OUTPUTS = [("parquet", ""), ("csv", ""), ("jsonl", ""), *(("sql", d) for d in DIALECTS)]
# Columns whose values may be null (everything else is required).
NULLABLE = {("students", "phone"), ("enrollments", "grade"), ("a_child", "zz_note")}
ENROLLMENT_COLUMNS = ["enrollment_id", "student_id", "course_id", "term", "grade"]


def spec_document(name: str) -> dict:
    text = SPECS[name]
    return tomllib.loads(text) if name == "courses" else yaml.safe_load(text)


def expected_columns(name: str) -> dict[str, list[str]]:
    """Each table's columns as the spec lists them, its primary key moved first."""
    found = {}
    for table, body in spec_document(name)["tables"].items():
        if "enrollments" in body:
            found[table] = ENROLLMENT_COLUMNS
            continue
        columns = list(body["columns"])
        keys = [c for c in columns if body["columns"][c].get("primary_key")]
        found[table] = keys + [c for c in columns if c not in keys]
    return found


def key_columns(name: str) -> set[tuple[str, str]]:
    """(table, column) that hold another table's keys: named as another table's primary key
    (teacher_id, department_id …), or declared (a foreign_key, a references)."""
    document = spec_document(name)["tables"]
    primary = {
        next(c for c, v in body["columns"].items() if v.get("primary_key")): table
        for table, body in document.items()
        if "columns" in body
    }
    found = set()
    for table, columns in expected_columns(name).items():
        declared = document[table].get("columns", {})
        for column in columns:
            options = declared.get(column, {})
            named = column in primary and primary[column] != table
            if named or options.get("kind") == "foreign_key" or "references" in options:
                found.add((table, column))
    return found


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    """Every spec in every format (and SQL dialect), made by one real bfd."""
    root = tmp_path_factory.mktemp("loads")
    daemon = Daemon(root / "bfd", [*FAST_RETRIES, "--cpu-workers", "2"])
    daemon.root.mkdir()
    daemon.start()
    made = {}
    try:
        for name, text in SPECS.items():
            spec = root / f"{name}.{'toml' if name == 'courses' else 'yaml'}"
            spec.write_text(text)
            for fmt, dialect in OUTPUTS:
                dest = root / f"{name}-{fmt}{dialect}"
                dest.mkdir()
                job = f"{name}-{fmt}{dialect}"
                args = ["--rows", str(ROWS[name]), "--format", fmt, "--seed", "3"]
                args += ["--chunk-rows", str(CHUNK_ROWS), "--spec", str(spec), "--dest", str(dest)]
                args += ["--sql-dialect", dialect] if dialect else []
                done = daemon.bfctl("submit", "generate", job, *args)
                assert done.returncode == 0, done.stderr
                made[name, fmt, dialect] = dest
        for name, fmt, dialect in made:
            job = daemon.wait_state(f"{name}-{fmt}{dialect}", {"completed", "failed"}, 180)
            assert job.state == "completed", (name, fmt, daemon.log_tail())
        yield made
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
        daemon.cleanup()


def parts(dest: Path, table: str) -> list[Path]:
    return sorted((dest / table).glob("part-*"))


def columns_of(path: Path) -> list[str]:
    """The columns a part file holds, in order, read as its format's readers read them."""
    if path.suffix == ".parquet":
        return pq.read_schema(path).names
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return next(csv.reader(handle))
    if path.suffix == ".jsonl":
        return list(json.loads(path.read_text().split("\n", 1)[0]))
    head = re.match(r"INSERT INTO [`\"]\w+[`\"] \(([^)]*)\)", path.read_text())
    return [name.strip('`" ') for name in head.group(1).split(",")]


def schema_columns(schema: Path) -> dict[str, list[str]]:
    """schema.sql's columns per table, in order (its column lines: a quoted name, a type)."""
    found: dict[str, list[str]] = {}
    for table, body in re.findall(
        r"CREATE TABLE [`\"](\w+)[`\"] \((.*?)\n\)", schema.read_text(), re.S
    ):
        found[table] = re.findall(r"^  [`\"](\w+)[`\"] [A-Z]", body, re.M)
    return found


# -- column order ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize(("fmt", "dialect"), OUTPUTS)
def test_every_format_keeps_the_spec_order_with_the_key_first_as_schema_sql(
    outputs, spec, fmt, dialect
):
    expected = expected_columns(spec)
    dest = outputs[spec, fmt, dialect]
    for sql_dialect in ("sqlite", "postgres", "mysql"):  # every schema.sql says the same
        assert schema_columns(outputs[spec, "sql", sql_dialect] / "schema.sql") == {
            table: expected[table]
            for table in schema_columns(dest.parent / f"{spec}-sqlsqlite" / "schema.sql")
        }
    assert set(expected) == set(schema_columns(outputs[spec, "sql", "sqlite"] / "schema.sql"))
    for table, columns in expected.items():
        found = parts(dest, table)
        assert found, (table, fmt)
        for part in found:
            assert columns_of(part) == columns, (spec, fmt, dialect, part.name)


def test_the_stored_spec_keeps_the_order_its_file_gave() -> None:
    """Jobs are stored as canonical JSON (sorted keys): the order is kept beside it."""
    model = s.load(SHUFFLED, "x.yaml")
    stored = json.loads(json.dumps(model.model_dump(mode="json"), sort_keys=True))
    assert next(iter(stored["tables"]["a_child"]["columns"])) == "amount"  # sorted: the cause
    again = s.restored(stored, json.loads(json.dumps(model.column_order(), sort_keys=True)))
    assert list(again.tables) == ["z_parent", "a_child", "m_pair"]
    assert list(again.tables["a_child"].schema_columns()) == expected_columns("shuffled")["a_child"]


# -- loading the SQL: sqlite3 always, PostgreSQL and MariaDB when installed -------------------


def table_rows(outputs, spec: str) -> dict[str, int]:
    """Rows per table, from the Parquet output of the same spec and seed."""
    dest = outputs[spec, "parquet", ""]
    return {table: ds.dataset(dest / table).count_rows() for table in expected_columns(spec)}


def load_order(dest: Path) -> list[str]:
    """Tables in the order load.sql reads their first part."""
    found = re.findall(r"(\w+)/part-\d+\.sql", (dest / "load.sql").read_text())
    return list(dict.fromkeys(found))


def with_a_broken_part(dest: Path, tmp_path: Path, table: str = "enrollments") -> Path:
    """A copy of an SQL output one of whose middle parts has, in its first row, a course that
    does not exist (or, for another table, starts with a statement into no table): its load
    must fail, exit non-zero, and leave no row behind."""
    copy = tmp_path / "broken"
    shutil.copytree(dest, copy)
    found = parts(copy, table)
    middle = found[len(found) // 2]
    text = middle.read_text()
    if table == "enrollments":
        broken = re.sub(
            r"VALUES\n\((\d+), (\d+), \d+,", r"VALUES\n(\1, \2, 99999999,", text, count=1
        )
    else:
        broken = "INSERT INTO no_such_table VALUES (1);\n" + text
    assert broken != text
    middle.write_text(broken)
    return copy


def parents_first(spec: str, order: list[str]) -> bool:
    model = s.load(SPECS[spec], "x.toml" if spec == "courses" else "x.yaml")
    return all(
        order.index(parent) < order.index(table)
        for table in order
        for parent in model.tables[table].parents()
    )


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_load_sql_loads_into_sqlite3_parents_first_with_keys_enforced(outputs, spec, tmp_path):
    dest = outputs[spec, "sql", "sqlite"]
    order = load_order(dest)
    assert parents_first(spec, order) and not parents_first(spec, sorted(order))
    db = tmp_path / "loaded.db"
    done = subprocess.run(
        ["sqlite3", str(db), ".read load.sql"], cwd=dest, capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    with sqlite3.connect(db) as conn:
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in order}
        assert counts == table_rows(outputs, spec)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        declared = {
            (table, row[3])
            for table in order
            for row in conn.execute(f'PRAGMA foreign_key_list("{table}")')
        }
        assert declared == key_columns(spec)
    # It stops at the first error: run again, its CREATE TABLE fails and no row is added.
    again = subprocess.run(
        ["sqlite3", str(db), ".read load.sql"], cwd=dest, capture_output=True, text=True
    )
    assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
    with sqlite3.connect(db) as conn:
        assert {
            t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in order
        } == counts
    # The glob order (alphabetical) breaks a key, so the load script's order is what loads:
    # the same parts read in sorted order into a fresh database fail on a foreign key.
    glob_order = "".join(
        f".read {p.relative_to(dest)}\n" for p in sorted(dest.glob("*/part-*.sql"))
    )
    script = ".bail on\nPRAGMA foreign_keys = ON;\n.read schema.sql\n" + glob_order
    refused = subprocess.run(
        ["sqlite3", str(tmp_path / "glob.db")],
        input=script,
        cwd=dest,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "FOREIGN KEY constraint failed" in refused.stderr
    broken = with_a_broken_part(dest, tmp_path, order[-1])
    failed = subprocess.run(
        ["sqlite3", str(tmp_path / "broken.db"), ".read load.sql"],
        cwd=broken, capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode != 0, failed.stderr
    assert "FOREIGN KEY constraint failed" in failed.stderr or "no such table" in failed.stderr
    with sqlite3.connect(tmp_path / "broken.db") as conn:  # one transaction: nothing stayed
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_load_sql_loads_into_postgresql_with_every_key(outputs, postgres, tmp_path):  # noqa: F811
    dest = outputs["courses", "sql", "postgres"]
    db = postgres.fresh_database()
    done = postgres.psql(db, "-f", str(dest / "load.sql"), check=False, cwd=tmp_path)
    assert done.returncode == 0 and "ERROR" not in done.stderr, done.stderr
    rows = table_rows(outputs, "courses")
    for table, count in rows.items():
        assert postgres.query(db, f"SELECT count(*) FROM {table}") == [(str(count),)]
    foreign = postgres.query(
        db,
        "SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c JOIN pg_attribute a "
        "ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) WHERE c.contype = 'f'",
    )
    assert set(foreign) == key_columns("courses")
    unique = postgres.query(
        db,
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'u' ORDER BY 1, 2",
    )
    assert ("enrollments", "UNIQUE (student_id, course_id, term)") in unique
    assert ("time_slots", "UNIQUE (day, starts_at)") in unique
    broken, empty = with_a_broken_part(dest, tmp_path), postgres.fresh_database()
    failed = postgres.psql(empty, "-f", str(broken / "load.sql"), check=False, cwd=tmp_path)
    assert failed.returncode != 0 and "violates foreign key" in failed.stderr, failed.stderr
    assert postgres.query(empty, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        ("0",)
    ]  # one transaction: nothing stayed
    again = postgres.psql(db, "-f", str(dest / "load.sql"), check=False, cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
    for table, count in rows.items():  # stopped at the first error: nothing added
        assert postgres.query(db, f"SELECT count(*) FROM {table}") == [(str(count),)]
    typed = postgres.query(
        db, "SELECT data_type FROM information_schema.columns WHERE column_name = 'starts_at'"
    )
    assert typed == [("time without time zone",)]
    # Enforced: a seat in no course, and a student's second seat in one course and term.
    bad = postgres.psql(
        db, "-v", "ON_ERROR_STOP=1", "-c",
        "INSERT INTO enrollments VALUES (10000000, 1, 10000000, '2025-fall', NULL)", check=False,
    )  # fmt: skip
    assert "violates foreign key constraint" in bad.stderr, bad.stderr
    twice = postgres.psql(
        db, "-v", "ON_ERROR_STOP=1", "-c",
        "INSERT INTO enrollments SELECT enrollment_id + 10000000, student_id, course_id, term, "
        "grade FROM enrollments LIMIT 1", check=False,
    )  # fmt: skip
    assert "duplicate key value violates unique constraint" in twice.stderr, twice.stderr


def test_csv_output_copies_into_the_generated_schema_in_postgresql(outputs, postgres, tmp_path):  # noqa: F811
    """\\copy TABLE FROM part CSV HEADER, table by table parents first, into schema.sql:
    the same rows as the SQL output loaded."""
    sql, csv_dest = outputs["courses", "sql", "postgres"], outputs["courses", "csv", ""]
    loaded, copied = postgres.fresh_database(), postgres.fresh_database()
    postgres.psql(loaded, "-v", "ON_ERROR_STOP=1", "-f", str(sql / "load.sql"))
    script = tmp_path / "copy.sql"
    lines = ["\\set ON_ERROR_STOP on", f"\\i {sql / 'schema.sql'}"]
    for table in load_order(sql):
        lines += [f"\\copy {table} FROM '{part}' CSV HEADER" for part in parts(csv_dest, table)]
    script.write_text("\n".join(lines) + "\n")
    done = postgres.psql(copied, "-f", str(script), check=False)
    assert done.returncode == 0, done.stderr
    for table in expected_columns("courses"):
        digest = f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        assert postgres.query(copied, digest) == postgres.query(loaded, digest), table


def test_load_sql_loads_into_mariadb_innodb_with_table_level_keys(outputs, mariadb, tmp_path):  # noqa: F811
    dest = outputs["courses", "sql", "mysql"]
    db = mariadb.fresh_database()
    done = mariadb.client(db, check=False, cwd=dest, stdin=dest / "load.sql")
    assert done.returncode == 0, done.stderr
    for table, count in table_rows(outputs, "courses").items():
        assert mariadb.query(db, f"SELECT count(*) FROM `{table}`") == [(str(count),)]
    # The client goes on past an error in a sourced file: the script's check of every
    # table's rows ends it before its COMMIT, and the rows roll back.
    broken, empty = with_a_broken_part(dest, tmp_path), mariadb.fresh_database()
    failed = mariadb.client(empty, check=False, cwd=broken, stdin=broken / "load.sql")
    assert failed.returncode != 0 and "foreign key constraint fails" in failed.stderr
    assert "all_rows_loaded" in failed.stderr, failed.stderr
    for table in expected_columns("courses"):
        assert mariadb.query(empty, f"SELECT count(*) FROM `{table}`") == [("0",)]
    # Into tables that exist already: refused before anything is read.
    again = mariadb.client(db, check=False, cwd=dest, stdin=dest / "load.sql")
    assert again.returncode != 0 and "tables_are_new" in again.stderr, again.stderr
    for table, count in table_rows(outputs, "courses").items():  # nothing added
        assert mariadb.query(db, f"SELECT count(*) FROM `{table}`") == [(str(count),)]
    foreign = mariadb.query(
        db,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        f"WHERE TABLE_SCHEMA = '{db}' AND REFERENCED_TABLE_NAME IS NOT NULL",
    )
    assert set(foreign) == key_columns("courses")
    stored = mariadb.query(
        db,
        "SELECT DISTINCT ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = '{db}'",
    )
    assert stored == [("InnoDB", "utf8mb4_bin")]
    typed = mariadb.query(
        db,
        "SELECT DATA_TYPE FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = '{db}' AND COLUMN_NAME = 'starts_at'",
    )
    assert typed == [("time",)]
    unique = mariadb.query(
        db,
        "SELECT TABLE_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM "
        f"information_schema.STATISTICS WHERE TABLE_SCHEMA = '{db}' AND NON_UNIQUE = 0 "
        "AND INDEX_NAME <> 'PRIMARY' GROUP BY TABLE_NAME, INDEX_NAME",
    )
    assert ("enrollments", "student_id,course_id,term") in unique
    assert ("time_slots", "day,starts_at") in unique
    bad = mariadb.client(
        db, "-e", "INSERT INTO enrollments VALUES (10000000, 1, 10000000, '2025-fall', NULL)",
        check=False,
    )  # fmt: skip
    assert "foreign key constraint fails" in bad.stderr, bad.stderr


# -- Parquet's required fields, and the readers of a table's folder ---------------------------


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_parquet_marks_key_and_not_null_columns_required(outputs, spec):
    dest = outputs[spec, "parquet", ""]
    for table, columns in expected_columns(spec).items():
        for part in parts(dest, table):
            schema = pq.ParquetFile(part).schema  # Parquet's own: REQUIRED or OPTIONAL
            required = {
                schema.column(i).name: schema.column(i).max_definition_level == 0
                for i in range(len(columns))
            }
            assert required == {c: (table, c) not in NULLABLE for c in columns}, (table, part.name)


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_each_table_folder_reads_with_no_options(outputs, spec):
    """pyarrow.dataset, pandas, polars and DuckDB each read a table's folder as it is: only
    part files inside, every one the table's columns in order."""
    rows = table_rows(outputs, spec)
    for fmt in ("parquet", "csv", "jsonl"):
        dest = outputs[spec, fmt, ""]
        for table, columns in expected_columns(spec).items():
            folder = dest / table
            assert sorted(p.name for p in folder.iterdir()) == [p.name for p in parts(dest, table)]
            files = f"{folder}/*.{fmt}"
            read = {
                "duckdb": duckdb.sql(
                    f"SELECT * FROM {'read_json' if fmt == 'jsonl' else 'read_' + fmt}('{files}')"
                ).columns,
            }
            counted = {"duckdb": duckdb.sql(f"SELECT count(*) FROM '{files}'").fetchall()[0][0]}
            if fmt == "parquet":
                for reader, table_read in (
                    ("pyarrow.dataset", ds.dataset(folder).to_table()),
                    ("pandas", pandas.read_parquet(folder)),
                    ("polars", polars.read_parquet(folder)),
                ):
                    read[reader] = list(
                        table_read.columns
                        if reader != "pyarrow.dataset"
                        else table_read.column_names
                    )
                    counted[reader] = len(table_read)
            elif fmt == "csv":
                read["pyarrow.dataset"] = ds.dataset(folder, format="csv").schema.names
                frame = polars.read_csv(files)
                read["polars"], counted["polars"] = frame.columns, len(frame)
            else:
                frame = polars.read_ndjson(files)
                read["polars"], counted["polars"] = frame.columns, len(frame)
            assert {r: list(c) for r, c in read.items()} == {r: columns for r in read}, (fmt, table)
            assert counted == {r: rows[table] for r in counted}, (fmt, table)


# -- --sql-dialect is for SQL only ----------------------------------------------------------


def test_sql_dialect_with_another_format_is_refused_by_bfctl_and_bfd(daemon, tmp_path):
    """Every dialect with every other format (given, or the default parquet): bfctl refuses
    it before bfd is asked (exit 2), and bfd refuses the bare request; no job, no file.
    (With --format sql each dialect is a job: the `outputs` fixture makes them.)"""
    dest = tmp_path / "out"
    dest.mkdir()
    for fmt in ("", "parquet", "csv", "jsonl"):
        for dialect in DIALECTS:
            case = (fmt, dialect)
            args = ["--preset", "courses", "--rows", "10", "--dest", str(dest)]
            args += ["--sql-dialect", dialect, *(["--format", fmt] if fmt else [])]
            refused = daemon.bfctl("submit", "generate", "g", *args)
            assert refused.returncode == 2, (case, refused.stderr)
            assert f"--sql-dialect {dialect} is for --format sql only" in refused.stderr, case
            assert f"format is {fmt or 'parquet'}" in refused.stderr, case
            spec = pb.GenerateSpec(
                preset="courses", rows=10, dest=str(dest), format=fmt, sql_dialect=dialect
            )
            with pytest.raises(grpc.RpcError) as answer:
                daemon.stub.Submit(pb.SubmitRequest(name="g", generate=spec), timeout=10)
            assert answer.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
            details = answer.value.details()
            # bfd names the request's fields, as an API caller wrote them
            words = f"sql_dialect {dialect!r} is for format 'sql' only"
            assert words in details and "--" not in details, (case, details)
            assert f"format is {fmt or 'parquet'!r}" in details, (case, details)
    assert list(dest.iterdir()) == [] and daemon.bfctl("status", "g").returncode != 0


# -- what a spec may declare, and what is refused -------------------------------------------

REF = 'references = { table = "p", column = "id" }'
BASE = """
[tables.p]
rows = 5
[tables.p.columns]
id = { kind = "sequence", primary_key = true, start = 10, step = 10 }
when = { kind = "cycle", values = ["08:00", "09:30"], type = "time" }
[tables.c.columns]
id = { kind = "sequence", primary_key = true }
"""


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('r = { kind = "cycle", values = [10, 50], @REF }', None),
        ('r = { kind = "choice", values = [20, 30], @REF }', None),
        ('r = { kind = "integer", min = 10, max = 10, @REF }', None),
        ('r = { kind = "cycle", values = [10, 60], @REF }',
         "60 is none of its 5 rows' id"),
        ('r = { kind = "cycle", values = [15], @REF }',
         "15 is none of its 5 rows' id"),
        ('r = { kind = "integer", min = 10, max = 20, @REF }',
         "11 is none"),
        ('r = { kind = "cycle", values = [1], references = { table = "q", column = "id" } }',
         "a table the spec does not generate"),
        ('r = { kind = "cycle", values = [1], references = { table = "p", column = "when" } }',
         "must be a sequence that is the primary key"),
        ('r = { kind = "word", @REF }',
         "only cycle, choice and integer"),
        ('r = { kind = "foreign_key", table = "p", column = "id", @REF }',
         "is a key already"),
        ('t = { kind = "cycle", values = ["8:00"], type = "time" }', "not a time of day"),
        ('t = { kind = "choice", values = ["24:00"], type = "time" }', "not a time of day"),
        ('t = { kind = "choice", values = [1], type = "time" }', "not a time of day"),
    ],
    ids=["cycle", "choice", "integer", "cycle-outside", "off-step", "range-outside", "no-table",
         "not-a-key", "words", "on-a-key", "time-one-digit", "time-24", "time-int"],
)  # fmt: skip
def test_declared_references_and_times_are_kept_or_refused_naming_the_column(extra, words):
    where = "tables.c.columns." + extra.split(" ")[0]
    extra = extra.replace("@REF", REF)
    try:
        s.load(BASE + extra + "\n", "s.toml").check(20)
    except (InvalidArgument, ValueError) as refused:
        assert words is not None and words in str(refused) and where in str(refused), str(refused)
        return
    assert words is None, f"taken, yet {words!r} was expected"


@pytest.mark.parametrize(
    ("table", "key", "rows", "words"),
    [
        ("c", '["id", "x"]', 50, None),  # a primary key among them
        ("c", '["x", "y"]', 12, None),  # cycles of 3 and 4: 12 combinations
        ("c", '["x", "y"]', 13, "repeats within the table's 13 rows"),
        ("c", '["x", "z"]', 5, "is not kept unique by the generator"),
        ("c", '["x", "nope"]', 5, "names a missing column 'nope'"),
        ("c", '["x", "x"]', 5, "names a column twice"),
    ],
)
def test_table_unique_keys_are_declared_only_where_the_generator_keeps_them(
    table, key, rows, words
):
    text = (
        f"[tables.{table}]\nrows = {rows}\nunique = [{key}]\n[tables.{table}.columns]\n"
        'id = { kind = "sequence", primary_key = true }\n'
        'x = { kind = "cycle", values = ["a", "b", "c"] }\n'
        'y = { kind = "cycle", values = [1, 2, 3, 4] }\n'
        'z = { kind = "integer", min = 0, max = 9 }\n'
    )
    try:
        s.load(text, "s.toml").check(1)
    except (InvalidArgument, ValueError) as refused:
        assert words is not None and words in str(refused), str(refused)
        assert f"tables.{table}.unique[0]" in str(refused)
        return
    assert words is None


def test_a_mysql_unique_key_past_innodbs_key_length_is_refused_for_mysql_only():
    text = (
        '[tables.t]\nrows = 10\nunique = [["id", "a", "b", "c"]]\n[tables.t.columns]\n'
        'id = { kind = "sequence", primary_key = true }\n'
        + "".join(f'{n} = {{ kind = "word" }}\n' for n in "abc")
    )
    for dialect, refused in (("mysql", True), ("postgres", False)):
        request = SubmitGenerate(
            name="g", spec_text=text, spec_name="s.toml", rows=10, format="sql",
            sql_dialect=dialect, dest="/tmp/unused",
        )  # fmt: skip
        if not refused:
            request.request()
            continue
        with pytest.raises(InvalidArgument) as refusal:
            request.request()
        words = str(refusal.value)
        assert "tables.t.unique[0]" in words and "limit of 3.07 kB (3,072 B)" in words
