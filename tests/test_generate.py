"""Generate jobs: determinism to the byte, every format in its natural reader, bad specs.

The spec below uses every generator. What must hold is checked on the output with
DuckDB, pyarrow, the csv and json modules and sqlite3, never by the generator itself.
"""

import csv
import hashlib
import json
import sqlite3
import time
import tomllib
from pathlib import Path

import duckdb
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import Daemon, gone, wait_until

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.columns import Dataset
from bulkforge.daemon.outputs import MARKER
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

SPEC = """
[tables.departments]
rows = 12
[tables.departments.columns]
department_id = { kind = "sequence", primary_key = true }
name = { kind = "pattern", pattern = "Dept [A-Z]{2}", unique = true }

[tables.students]
scale = 1.0
[tables.students.columns]
student_id = { kind = "sequence", start = 1000, primary_key = true }
first_name = { kind = "first_name" }
last_name = { kind = "last_name" }
email = { kind = "email", first = "first_name", last = "last_name", unique = true }
birth_date = { kind = "date", start = "1995-01-01", end = "2007-12-31" }
credits = { kind = "integer", min = 0, max = 240, distribution = "zipf", a = 1.1 }
phone = { kind = "phone", null = 0.1 }
address = { kind = "address" }
code = { kind = "pattern", pattern = "[A-Z]{3}-\\\\d{4}", unique = true }
active = { kind = "boolean", p = 0.9 }
enrolled_at = { kind = "timestamp", start = "2020-01-01T00:00:00", end = "2024-12-31T23:59:59" }
motto = { kind = "word", null = 0.2 }
department_name = { kind = "lookup", via = "department_id", column = "name" }

[tables.students.columns.gpa]
kind = "float"
min = 0
max = 4
distribution = "normal"
mean = 3.0
sd = 0.5
digits = 2

[tables.students.columns.level]
kind = "choice"
values = ["freshman", "sophomore", "junior", "senior"]
weights = [4, 3, 2, 1]

[tables.students.columns.department_id]
kind = "foreign_key"
table = "departments"
column = "department_id"
distribution = "zipf"
"""


def write_spec(tmp_path: Path, text: str = SPEC, name: str = "school.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def digests(dest: Path) -> dict[str, str]:
    return {
        str(p.relative_to(dest)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dest.rglob("*"))
        if p.is_file() and p.name != MARKER  # the marker names its job: not the data
    }


def generate(daemon: Daemon, name: str, spec: Path, dest: Path, *args: str) -> pb.Job:
    dest.mkdir(parents=True, exist_ok=True)
    submitted = daemon.bfctl(
        "submit", "generate", name, "--spec", str(spec), "--dest", str(dest), *args
    )
    assert submitted.returncode == 0, submitted.stderr
    return daemon.wait_state(name, {"completed", "failed"}, timeout=180)


# -- the core: values as a function of (seed, table, column, row) ------------------------


def test_a_table_is_the_same_whatever_the_chunks_and_a_new_column_changes_no_other() -> None:
    spec = s.load(SPEC, "x.toml")
    counts = spec.check(5000)
    whole = Dataset(spec, counts, 7).table("students").rows(0, 5000)
    pieces = Dataset(spec, counts, 7).table("students")
    chunked = pa.concat_tables([pieces.rows(start, 777) for start in range(0, 4662, 777)])
    assert chunked.equals(whole.slice(0, 4662))
    assert pieces.rows(4662, 338).equals(whole.slice(4662))
    wider = s.load(
        SPEC
        + '[tables.students.columns.nickname]\nkind = "word"\n'
        + '[tables.students.columns.score]\nkind = "integer"\nmin = 1\nmax = 9\n',
        "x.toml",
    )
    more = Dataset(wider, wider.check(5000), 7).table("students").rows(0, 5000)
    assert more.select(whole.column_names).equals(whole)
    assert not Dataset(spec, counts, 8).table("students").rows(0, 5000).equals(whole)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (('kind = "first_name"', 'kind = "first_nam"'), "first_name"),
        (('table = "departments"\ncolumn', 'table = "faculties"\ncolumn'), "faculties"),
        (('column = "department_id"\ndistribution', 'column = "dept"\ndistribution'), "dept"),
        (("rows = 12", "rows = 0"), "departments.rows"),
        (('pattern = "Dept [A-Z]{2}"', 'pattern = "Dept [A-B]{2}"'), "departments.columns.name"),
        (("start = 1000, primary_key = true", "primary_key = true, null = 0.1"), "student_id"),
        (("start = 1000, primary_key", "start = 9223372036854775000, primary_key"), "student_id"),
        (("start = 1000, primary_key", "start = 9223372036854775808, primary_key"), "student_id"),
        (("min = 0, max = 240", "min = 0, max = 100000000000000000000"), "credits"),
        (("min = 0, max = 240", "min = -9223372036854775808, max = 9"), "credits"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(change: tuple[str, str], named: str) -> None:
    text = SPEC.replace(*change)
    assert text != SPEC
    with pytest.raises((InvalidArgument, ValueError)) as refused:
        s.load(text, "school.toml").check(1000)
    assert named in str(refused.value)


def test_the_same_spec_as_json_or_yaml_is_the_same_spec() -> None:
    document = tomllib.loads(SPEC)
    as_toml = s.load(SPEC, "school.toml")
    assert s.load(json.dumps(document, default=str), "school.json") == as_toml
    assert s.load(yaml.safe_dump(document), "school.yaml") == as_toml
    with pytest.raises(InvalidArgument, match=r"school\.ini"):
        s.load(SPEC, "school.ini")


def test_a_cycle_of_foreign_keys_is_refused() -> None:
    text = """
[tables.a.columns]
id = { kind = "sequence" }
b_id = { kind = "foreign_key", table = "b", column = "id" }
[tables.b.columns]
id = { kind = "sequence" }
a_id = { kind = "foreign_key", table = "a", column = "id" }
"""
    with pytest.raises(ValueError, match="cycle"):
        s.load(text, "cycle.toml").check(10)


# -- the real daemon ------------------------------------------------------------------------


def test_same_seed_same_bytes_across_runs_workers_and_chunk_sizes(
    make_daemon, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path)
    one = make_daemon("--cpu-workers", "1").start()
    two = make_daemon("--cpu-workers", "2").start()
    args = ("--rows", "30000", "--seed", "11", "--chunk-rows", "7000")
    assert generate(one, "a", spec, tmp_path / "a", *args).state == "completed"
    assert generate(two, "b", spec, tmp_path / "b", *args).state == "completed"
    assert generate(two, "c", spec, tmp_path / "c", *args).state == "completed"
    first = digests(tmp_path / "a")
    assert len(first) == 1 + 5 and first == digests(tmp_path / "b") == digests(tmp_path / "c")
    other = ("--rows", "30000", "--seed", "11", "--chunk-rows", "11000")
    assert generate(two, "d", spec, tmp_path / "d", *other).state == "completed"
    for table in ("departments", "students"):
        tables = [pq.read_table(tmp_path / run / table) for run in ("a", "d")]
        assert tables[0].equals(tables[1]) and tables[0].num_rows in (12, 30000)
    reseeded = ("--rows", "30000", "--seed", "12", "--chunk-rows", "7000")
    assert generate(two, "e", spec, tmp_path / "e", *reseeded).state == "completed"
    assert (
        digests(tmp_path / "e")["students/part-00000.parquet"]
        != first["students/part-00000.parquet"]
    )
    for running in (one, two):
        assert running.stop() == 0, running.log_tail()


def test_constraints_hold_in_the_output(daemon: Daemon, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    job = generate(daemon, "g", write_spec(tmp_path), dest, "--rows", "50000", "--seed", "3")
    assert job.state == "completed" and dict(job.counts) == {"done": 2}
    tables = daemon.bfctl_json("status", "g")["tables"]
    assert [(t["name"], t["rows_done"], t["rows_total"], t["parts_done"]) for t in tables] == [
        ("departments", 12, 12, 1),
        ("students", 50000, 50000, 1),
    ]
    stats = daemon.bfctl("stats", "g")
    assert stats.returncode == 0 and "students" in stats.stdout and "50,000" in stats.stdout
    students = f"read_parquet('{dest}/students/*.parquet')"
    departments = f"read_parquet('{dest}/departments/*.parquet')"
    checks = duckdb.sql(
        f"SELECT count(*), count(DISTINCT student_id), count(DISTINCT email), "
        f"count(DISTINCT code), min(gpa) >= 0 AND max(gpa) <= 4, "
        f"min(credits) >= 0 AND max(credits) <= 240, "
        f"count(*) FILTER (phone IS NULL) BETWEEN 4000 AND 6000 FROM {students}"
    ).fetchall()[0]
    assert checks == (50000, 50000, 50000, 50000, True, True, True)
    orphans = duckdb.sql(
        f"SELECT count(*) FROM {students} s LEFT JOIN {departments} d "
        "USING (department_id) WHERE d.name IS NULL OR d.name != s.department_name"
    ).fetchall()[0]
    assert orphans == (0,)
    email = duckdb.sql(f"SELECT first_name, last_name, email FROM {students} LIMIT 1").fetchall()[0]
    assert email[2].startswith(f"{email[0].lower()}.{email[1].lower()}")


def test_every_format_loads_in_its_natural_reader(daemon: Daemon, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    outputs = {}
    for fmt in ("csv", "jsonl", "sql"):
        outputs[fmt] = tmp_path / fmt
        args = ("--rows", "3000", "--format", fmt, "--chunk-rows", "1000")
        assert generate(daemon, fmt, spec, outputs[fmt], *args).state == "completed"
    with (outputs["csv"] / "students/part-00001.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1000 and rows[0]["student_id"] == "2000"
    lines = (outputs["jsonl"] / "students/part-00002.jsonl").read_text().splitlines()
    documents = [json.loads(line) for line in lines]
    assert len(documents) == 1000 and documents[-1]["student_id"] == 3999
    assert any(d["phone"] is None for d in documents) and isinstance(documents[0]["active"], bool)

    sql = outputs["sql"]
    parts = [sql / "schema.sql", *sorted((sql / "departments").glob("*.sql"))]
    parts += sorted((sql / "students").glob("*.sql"))
    with sqlite3.connect(tmp_path / "school.db") as db:
        db.execute("PRAGMA foreign_keys = ON")
        for part in parts:
            db.executescript(part.read_text())
        assert db.execute("SELECT count(*) FROM students").fetchone() == (3000,)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO students (student_id) VALUES (1000)")
    postgres = tmp_path / "postgres"
    args = ("--rows", "3000", "--format", "sql", "--sql-dialect", "postgres")
    assert generate(daemon, "pg", spec, postgres, *args).state == "completed"
    assert "DOUBLE PRECISION" in (postgres / "schema.sql").read_text()
    loaded = duckdb.connect()  # DuckDB speaks PostgreSQL's SQL
    for part in [postgres / "schema.sql", *sorted(postgres.glob("*/*.sql"))]:
        loaded.execute(part.read_text())
    counted = loaded.execute("SELECT count(*), count(DISTINCT email) FROM students").fetchall()
    assert counted == [(3000, 3000)]


def test_kill_9_twice_and_resumed_gives_the_same_bytes(make_daemon, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    args = ("--rows", "600000", "--seed", "5", "--chunk-rows", "50000")
    reference = make_daemon("--cpu-workers", "2").start()
    assert generate(reference, "ref", spec, tmp_path / "ref", *args).state == "completed"
    assert reference.stop() == 0
    daemon = make_daemon("--cpu-workers", "2")
    dest = tmp_path / "out"
    dest.mkdir()
    daemon.start()
    submitted = daemon.bfctl(
        "submit", "generate", "big", "--spec", str(spec), "--dest", str(dest), *args
    )
    assert submitted.returncode == 0, submitted.stderr
    for kill in range(2):
        before = len(list(dest.glob("students/*.parquet")))
        deadline = time.monotonic() + 60
        while len(list(dest.glob("students/*.parquet"))) < before + 2:
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.02)
        workers = daemon.workers()
        daemon.kill9()
        # Orphaned workers notice and end: what they wrote is then all there is.
        wait_until(lambda w=workers: all(map(gone, w)), what="bfd's orphaned workers to end")
        for part in dest.glob("students/*.parquet"):
            pq.read_metadata(part)  # whatever is visible is whole
        daemon.start()
        assert "repair: job big:" in daemon.log.read_text(), kill
    assert daemon.wait_state("big", {"completed", "failed"}, timeout=180).state == "completed"
    assert digests(dest) == digests(tmp_path / "ref")
    assert daemon.stop() == 0


def test_bad_requests_are_refused_and_nothing_is_written(daemon: Daemon, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    bad = write_spec(tmp_path, SPEC.replace('kind = "boolean"', 'kind = "bool"'), "bad.toml")
    refused = daemon.bfctl(
        "submit", "generate", "x", "--spec", str(bad), "--rows", "10", "--dest", str(dest)
    )
    assert refused.returncode == 1 and "active" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert list(dest.iterdir()) == []
    not_toml = write_spec(tmp_path, "tables = [", "broken.toml")
    refused = daemon.bfctl(
        "submit", "generate", "y", "--spec", str(not_toml), "--rows", "10", "--dest", str(dest),
        "--format", "sql",
    )  # fmt: skip
    assert refused.returncode == 1 and "broken.toml" in refused.stderr
    assert list(dest.iterdir()) == []
    tiny_parts = daemon.bfctl(
        "submit", "generate", "w", "--spec", str(write_spec(tmp_path)), "--rows", "2000000",
        "--chunk-rows", "1", "--dest", str(dest),
    )  # fmt: skip
    assert tiny_parts.returncode == 1 and "chunk_rows" in tiny_parts.stderr
    assert list(dest.iterdir()) == []
    with pytest.raises(grpc.RpcError) as relative:
        spec = pb.GenerateSpec(spec_text=SPEC, spec_name="s.toml", rows=5, dest="rel")
        daemon.stub.Submit(pb.SubmitRequest(name="z", generate=spec), timeout=10)
    assert relative.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
def test_the_courses_preset_at_a_million_students_keeps_every_constraint(
    make_daemon, tmp_path: Path
) -> None:
    daemon = make_daemon("--cpu-workers", "2").start()
    dest = tmp_path / "school"
    dest.mkdir()
    submitted = daemon.bfctl(
        "submit", "generate", "school", "--preset", "courses", "--rows", "1000000",
        "--seed", "9", "--dest", str(dest),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = daemon.wait_state("school", {"completed", "failed"}, timeout=300)
    assert job.state == "completed", daemon.log_tail()
    db = duckdb.connect()
    for table in ("departments", "teachers", "students", "classrooms", "time_slots", "courses"):
        db.execute(f"CREATE VIEW {table} AS SELECT * FROM '{dest}/{table}/*.parquet'")
    db.execute(f"CREATE VIEW enrollments AS SELECT * FROM '{dest}/enrollments/*.parquet'")
    sizes = db.execute(
        "SELECT (SELECT count(*) FROM students), (SELECT count(*) FROM courses), "
        "(SELECT count(*) FROM enrollments)"
    ).fetchall()[0]
    assert sizes[:2] == (1_000_000, 50_000) and sizes[2] > 4_000_000
    violations = {
        "teacher without department": "SELECT count(*) FROM teachers ANTI JOIN departments "
        "USING (department_id)",
        "course without teacher": "SELECT count(*) FROM courses ANTI JOIN teachers "
        "USING (teacher_id)",
        "course without slot": "SELECT count(*) FROM courses c ANTI JOIN time_slots t "
        "ON c.slot = t.slot_id",
        "enrollment without student": "SELECT count(*) FROM enrollments ANTI JOIN students "
        "USING (student_id)",
        "enrollment without course": "SELECT count(*) FROM enrollments ANTI JOIN courses "
        "USING (course_id)",
        "duplicate emails": "SELECT count(*) - count(DISTINCT email) FROM students",
        "duplicate ids": "SELECT count(*) - count(DISTINCT student_id) FROM students",
        "over capacity": "SELECT count(*) FROM (SELECT course_id, term, count(*) AS n, "
        "any_value(capacity) AS cap FROM enrollments JOIN courses USING (course_id) "
        "GROUP BY ALL HAVING n > cap)",
        "slot collision": "SELECT count(*) FROM (SELECT student_id, term, slot, count(*) AS n "
        "FROM enrollments JOIN courses USING (course_id) GROUP BY ALL HAVING n > 1)",
        "grade in the current term": "SELECT count(*) FROM enrollments "
        "WHERE term = '2026-fall' AND grade IS NOT NULL",
        "past term without grade": "SELECT count(*) FROM enrollments "
        "WHERE term != '2026-fall' AND grade IS NULL",
        "teacher outside the department": "SELECT count(*) FROM courses c JOIN teachers t "
        "USING (teacher_id) WHERE c.department_id != t.department_id",
    }
    found = {what: db.execute(sql).fetchall()[0][0] for what, sql in violations.items()}
    assert found == dict.fromkeys(violations, 0)
    assert daemon.stop() == 0
