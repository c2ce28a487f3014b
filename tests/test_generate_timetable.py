"""The courses preset is a timetable a registrar would accept (issue 25).

The rules: no classroom hosts two courses in one slot of a term, no teacher teaches two
courses in one slot, a course's capacity (and so its enrollments) fits its room's seats,
at any size, the output the same however the parts are cut; and the preset's older
invariants still hold. Each rule is an SQL query over the files a real bfd wrote, in
every format: DuckDB reads Parquet, CSV and JSON Lines, sqlite3 loads the SQL output with
its foreign keys enforced. The queries are plain SQL, so both engines run the same text.

Below that, the two spec options that make it (`unique_per` on a foreign key, `at_most`
on an integer) are checked on generated specs of every shape, in-process, and each
impossible spec is refused naming its column.
"""

import random
import sqlite3
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import Daemon

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.columns import Dataset
from bulkforge.daemon.generator.request import preset
from bulkforge.proto.units import MAX_ROWS

TABLES = ("departments", "teachers", "students", "classrooms", "time_slots", "courses")
PARENTS_FIRST = (*TABLES, "enrollments")
CURRENT_TERM = "2026-fall"

# Every rule of the preset as a query counting what breaks it (0 when it holds).
RULES = {
    # The timetable (issue 25).
    "classroom with two courses in one slot": "SELECT count(*) FROM (SELECT slot, "
    "classroom_id FROM courses GROUP BY slot, classroom_id HAVING count(*) > 1) x",
    "classroom with two courses in one slot of a term": "SELECT count(*) FROM (SELECT "
    "e.term, c.slot, c.classroom_id FROM (SELECT DISTINCT course_id, term FROM enrollments) "
    "e JOIN courses c ON c.course_id = e.course_id "
    "GROUP BY e.term, c.slot, c.classroom_id HAVING count(*) > 1) x",
    "teacher with two courses in one slot": "SELECT count(*) FROM (SELECT slot, teacher_id "
    "FROM courses GROUP BY slot, teacher_id HAVING count(*) > 1) x",
    "teacher with two courses in one slot of a term": "SELECT count(*) FROM (SELECT e.term, "
    "c.slot, c.teacher_id FROM (SELECT DISTINCT course_id, term FROM enrollments) e "
    "JOIN courses c ON c.course_id = e.course_id "
    "GROUP BY e.term, c.slot, c.teacher_id HAVING count(*) > 1) x",
    "capacity over the room's seats": "SELECT count(*) FROM courses c "
    "JOIN classrooms r ON r.classroom_id = c.classroom_id WHERE c.capacity > r.seats",
    "enrollments over the room's seats": "SELECT count(*) FROM (SELECT course_id, term, "
    "count(*) AS n FROM enrollments GROUP BY course_id, term) e "
    "JOIN courses c ON c.course_id = e.course_id "
    "JOIN classrooms r ON r.classroom_id = c.classroom_id WHERE e.n > r.seats",
    "capacity outside 15..60": "SELECT count(*) FROM courses "
    "WHERE capacity < 15 OR capacity > 60 OR capacity IS NULL",
    "course without a room": "SELECT count(*) FROM courses c LEFT JOIN classrooms r "
    "ON r.classroom_id = c.classroom_id WHERE r.classroom_id IS NULL",
    # The preset's invariants from before.
    "teacher without department": "SELECT count(*) FROM teachers t LEFT JOIN departments d "
    "ON d.department_id = t.department_id WHERE d.department_id IS NULL",
    "course without teacher": "SELECT count(*) FROM courses c LEFT JOIN teachers t "
    "ON t.teacher_id = c.teacher_id WHERE t.teacher_id IS NULL",
    "course without slot": "SELECT count(*) FROM courses c LEFT JOIN time_slots t "
    "ON t.slot_id = c.slot WHERE t.slot_id IS NULL",
    "enrollment without student": "SELECT count(*) FROM enrollments e LEFT JOIN students s "
    "ON s.student_id = e.student_id WHERE s.student_id IS NULL",
    "enrollment without course": "SELECT count(*) FROM enrollments e LEFT JOIN courses c "
    "ON c.course_id = e.course_id WHERE c.course_id IS NULL",
    "duplicate keys": "SELECT (SELECT count(*) - count(DISTINCT course_id) FROM courses) + "
    "(SELECT count(*) - count(DISTINCT classroom_id) FROM classrooms) + "
    "(SELECT count(*) - count(DISTINCT student_id) FROM students) + "
    "(SELECT count(*) - count(DISTINCT enrollment_id) FROM enrollments)",
    "over capacity": "SELECT count(*) FROM (SELECT course_id, term, count(*) AS n "
    "FROM enrollments GROUP BY course_id, term) e JOIN courses c ON c.course_id = e.course_id "
    "WHERE e.n > c.capacity",
    "student in two courses of one slot in one term": "SELECT count(*) FROM (SELECT "
    "e.student_id, e.term, c.slot FROM enrollments e JOIN courses c ON c.course_id = "
    "e.course_id GROUP BY e.student_id, e.term, c.slot HAVING count(*) > 1) x",
    "grade in the current term": "SELECT count(*) FROM enrollments "
    f"WHERE term = '{CURRENT_TERM}' AND grade IS NOT NULL",
    "past term without grade": "SELECT count(*) FROM enrollments "
    f"WHERE term != '{CURRENT_TERM}' AND grade IS NULL",
    "course outside its teacher's department": "SELECT count(*) FROM courses c "
    "JOIN teachers t ON t.teacher_id = c.teacher_id WHERE c.department_id != t.department_id",
}

# (students, --chunk-rows or None): small, the size, and one cut into many parts
# (courses in 4 parts, enrollments in hundreds) that bfd's two workers make in parallel.
SIZES = [(200, None), (2000, None), (20000, 300)]
READERS = {
    "parquet": "read_parquet('{dest}/{table}/*.parquet')",
    "csv": "read_csv('{dest}/{table}/*.csv', header = true)",
    "jsonl": "read_json('{dest}/{table}/*.jsonl', format = 'newline_delimited')",
}


def expected_sizes(students: int) -> dict[str, int]:
    """Row counts the preset gives at --rows students (enrollments left to the data)."""
    spec = s.load(*preset("courses"))
    return spec.check(students)


def submit(daemon: Daemon, name: str, dest: Path, students: int, fmt: str, chunk) -> None:
    dest.mkdir(parents=True)
    args = ["--rows", str(students), "--seed", "25", "--format", fmt, "--dest", str(dest)]
    args += ["--chunk-rows", str(chunk)] if chunk else []
    if fmt == "sql":
        args += ["--sql-dialect", "sqlite"]
    done = daemon.bfctl("submit", "generate", name, "--preset", "courses", *args)
    assert done.returncode == 0, done.stderr


def open_output(dest: Path, fmt: str, tmp_path: Path):
    """A connection that sees the output's tables: DuckDB views, or a sqlite3 database the
    SQL output was loaded into (parents first, foreign keys enforced)."""
    if fmt == "sql":
        db = sqlite3.connect(tmp_path / f"{dest.name}.db")
        db.execute("PRAGMA foreign_keys = ON")
        db.executescript((dest / "schema.sql").read_text())
        for table in PARENTS_FIRST:
            for part in sorted((dest / table).glob("*.sql")):
                db.executescript(part.read_text())
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        return db
    db = duckdb.connect()
    for table in PARENTS_FIRST:
        reader = READERS[fmt].format(dest=dest, table=table)
        db.execute(f"CREATE VIEW {table} AS SELECT * FROM {reader}")
    return db


def broken_rules(db) -> dict[str, int]:
    return {rule: db.execute(sql).fetchall()[0][0] for rule, sql in RULES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl", "sql"])
def test_the_preset_is_a_timetable_at_every_size_in_every_format(
    make_daemon, tmp_path: Path, fmt: str
) -> None:
    daemon = make_daemon("--cpu-workers", "2").start()
    for students, chunk in SIZES:
        submit(daemon, f"school-{students}", tmp_path / f"s{students}", students, fmt, chunk)
    for students, chunk in SIZES:
        job = daemon.wait_state(f"school-{students}", {"completed", "failed"}, timeout=600)
        assert job.state == "completed", daemon.log_tail()
        dest = tmp_path / f"s{students}"
        if chunk:
            assert len(list((dest / "courses").iterdir())) > 1  # really made in parts
        db = open_output(dest, fmt, tmp_path)
        expected = expected_sizes(students)
        for table in TABLES:
            counted = db.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            assert counted == expected[table], (students, table)
        assert db.execute("SELECT count(*) FROM enrollments").fetchall()[0][0] > students
        assert broken_rules(db) == dict.fromkeys(RULES, 0), (fmt, students)
    assert daemon.stop() == 0, daemon.log_tail()


def test_the_timetable_is_the_same_however_the_parts_are_cut(make_daemon, tmp_path: Path):
    """Rooms, teachers and capacities are a function of the course's row: a run cut into
    parts of 23 rows, made by two workers, gives the courses of a run made whole."""
    daemon = make_daemon("--cpu-workers", "2").start()
    for name, chunk in (("whole", None), ("cut", 23)):
        submit(daemon, name, tmp_path / name, 2000, "parquet", chunk)
    for name in ("whole", "cut"):
        assert daemon.wait_state(name, {"completed", "failed"}, timeout=300).state == "completed"
    assert len(list((tmp_path / "cut" / "courses").iterdir())) == 5
    columns = "course_id, slot, classroom_id, teacher_id, department_id, capacity"
    both = [
        f"SELECT {columns} FROM read_parquet('{tmp_path}/{name}/courses/*.parquet')"
        for name in ("whole", "cut")
    ]
    differ = f"SELECT count(*) FROM (({both[0]} EXCEPT ALL {both[1]}) UNION ALL "
    differ += f"({both[1]} EXCEPT ALL {both[0]}))"
    assert duckdb.sql(differ).fetchall() == [(0,)]
    assert duckdb.sql(f"SELECT count(*) FROM ({both[0]})").fetchall() == [(100,)]
    assert daemon.stop() == 0, daemon.log_tail()


# -- the preset at every size, in-process -------------------------------------------------------


def test_the_preset_is_possible_at_every_size_up_to_the_largest() -> None:
    """The classrooms and teachers a slot needs are there at every --rows: no size is refused,
    and the tightest sizes (rooms just enough) still make a clash-free timetable."""
    spec = s.load(*preset("courses"))
    slot = spec.tables["courses"].columns["slot"]
    every = list(range(1, 20_001))
    spread = np.unique(np.logspace(4, np.log10(MAX_ROWS), 2000).astype(np.int64)).tolist()
    tightest = []
    for students in every + spread:
        counts = spec.check(students)
        most = slot.most_per_value(counts["courses"])
        assert most <= min(counts["classrooms"], counts["teachers"]), students
        if students <= 20_000 and most == counts["classrooms"]:
            tightest.append(students)
    assert tightest, "no size where the rooms are just enough: the test checks nothing tight"
    for students in [1, 2, *tightest[:: max(1, len(tightest) // 12)], 49_999]:
        courses, rooms = made_timetable(spec, students)
        assert timetable_clashes(courses, rooms) == (0, 0, 0), students


def made_timetable(spec: s.Spec, students: int) -> tuple[pa.Table, pa.Table]:
    dataset = Dataset(spec, spec.check(students), 5)
    courses = dataset.table("courses")
    rooms = dataset.table("classrooms")
    return courses.rows(0, courses.count), rooms.rows(0, rooms.count)


def timetable_clashes(courses: pa.Table, rooms: pa.Table) -> tuple[int, int, int]:
    db = duckdb.connect()
    db.register("courses", courses)
    db.register("rooms", rooms)
    return db.execute(
        "SELECT (SELECT count(*) - count(DISTINCT (slot, classroom_id)) FROM courses), "
        "(SELECT count(*) - count(DISTINCT (slot, teacher_id)) FROM courses), "
        "(SELECT count(*) FROM courses JOIN rooms USING (classroom_id) WHERE capacity > seats)"
    ).fetchall()[0]


# -- unique_per and at_most on specs of every shape -------------------------------------------


def spread_spec(values: int, repeat: int, parents: int, children: int, chunk: int) -> str:
    cycle = ", ".join(str(v) for v in range(values))
    return f"""
[tables.p]
rows = {parents}
[tables.p.columns]
id = {{ kind = "sequence", primary_key = true }}
size = {{ kind = "integer", min = 5, max = 9 }}
[tables.c]
rows = {children}
[tables.c.columns]
id = {{ kind = "sequence", primary_key = true }}
when = {{ kind = "cycle", values = [{cycle}], repeat = {repeat} }}
p = {{ kind = "foreign_key", table = "p", column = "id", unique_per = "when", null = 0.1 }}
n = {{ kind = "integer", min = 1, max = 20, at_most = {{ via = "p", column = "size" }} }}
"""


def shapes(count: int) -> list[tuple[int, int, int, int, int]]:
    """(cycle values, repeat, parents, children, chunk), parents from just enough to many."""
    drawn = random.Random(25)
    found = []
    for _ in range(count):
        values, repeat = drawn.randint(1, 40), drawn.choice([1, 1, 2, 3, 7])
        children = drawn.randint(1, 3000)
        most = s.Cycle(kind="cycle", values=list(range(values)), repeat=repeat).most_per_value(
            children
        )
        parents = most + drawn.choice([0, 0, 1, drawn.randint(0, 5 * most)])
        found.append((values, repeat, parents, children, drawn.randint(1, children)))
    return found


@pytest.mark.parametrize(("values", "repeat", "parents", "children", "chunk"), shapes(60))
def test_unique_per_gives_rows_of_one_value_distinct_parents_in_turns(
    values, repeat, parents, children, chunk
) -> None:
    spec = s.load(spread_spec(values, repeat, parents, children, chunk), "s.toml")
    dataset = Dataset(spec, spec.check(1), 3)
    table = dataset.table("c")
    # Made in parts of `chunk` rows, in reverse order: the same as made whole.
    parts = [table.rows(at, min(chunk, children - at)) for at in range(0, children, chunk)]
    made = pa.concat_tables(parts[::-1])
    assert made.sort_by("id").equals(table.rows(0, children))
    db = duckdb.connect()
    db.register("made", made)
    db.register("rooms", dataset.table("p").rows(0, parents))
    clashes, over, under, heaviest = db.execute(
        'SELECT (SELECT count(*) - count(DISTINCT ("when", p)) FROM made WHERE p IS NOT NULL), '
        "(SELECT count(*) FROM made JOIN rooms ON rooms.id = made.p WHERE made.n > rooms.size), "
        "(SELECT count(*) FROM made WHERE n < 1 OR n > 20), "
        "(SELECT max(k) FROM (SELECT count(*) AS k FROM made WHERE p IS NOT NULL GROUP BY p))"
    ).fetchall()[0]
    assert (clashes, over, under) == (0, 0, 0)
    # In turns: no parent serves more than the turns there are (each value's rows start
    # where the one before could end), nulls aside.
    most = spec.tables["c"].columns["when"].most_per_value(children)
    assert heaviest <= -(-values * most // parents)


BASE = """
[tables.rooms]
rows = 4
[tables.rooms.columns]
id = { kind = "sequence", primary_key = true }
seats = { kind = "integer", min = 20, max = 90 }
label = { kind = "word" }
[tables.t]
rows = 40
[tables.t.columns]
id = { kind = "sequence", primary_key = true }
slot = { kind = "cycle", values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }
twice = { kind = "cycle", values = [1, 1, 2] }
word = { kind = "word" }
"""


@pytest.mark.parametrize(
    ("column", "words"),
    [
        ('c = { kind = "foreign_key", table = "rooms", column = "id", unique_per = "twice" }',
         "must be a cycle of distinct values"),
        ('c = { kind = "foreign_key", table = "rooms", column = "id", unique_per = "word" }',
         "must be a cycle of distinct values"),
        ('c = { kind = "foreign_key", table = "rooms", column = "id", unique_per = "nope" }',
         "missing column t.nope"),
        ('c = { kind = "foreign_key", table = "rooms", column = "id", unique_per = "slot", '
         'distribution = "zipf" }', "takes no distribution ('zipf')"),
        ('c = { kind = "foreign_key", table = "rooms", column = "id", unique_per = "id" }',
         "must be a cycle of distinct values"),
        ('c = { kind = "integer", min = 1, max = 9, at_most = { via = "word", column = "seats" } }',
         "not a foreign_key"),
        ('c = { kind = "integer", min = 1, max = 9, at_most = { via = "nope", column = "seats" } }',
         "missing column t.nope"),
        ('k = { kind = "foreign_key", table = "rooms", column = "id" }\n'
         'c = { kind = "integer", min = 1, max = 9, at_most = { via = "k", column = "label" } }',
         "rooms.label must be an integer column"),
        ('k = { kind = "foreign_key", table = "rooms", column = "id" }\n'
         'c = { kind = "integer", min = 1, max = 9, at_most = { via = "k", column = "gone" } }',
         "rooms.gone must be an integer column"),
        ('k = { kind = "foreign_key", table = "rooms", column = "id" }\n'
         'c = { kind = "integer", min = 25, max = 60, at_most = { via = "k", column = "seats" } }',
         "can be 20, below min 25"),
        ('k = { kind = "foreign_key", table = "rooms", column = "id" }\n'
         'c = { kind = "integer", min = 1, max = 60, unique = true, '
         'at_most = { via = "k", column = "seats" } }', "cannot be capped"),
    ],
    ids=["cycle-with-repeats", "not-a-cycle", "missing-column", "zipf", "sequence",
         "via-not-a-key", "via-missing", "bound-not-integer", "bound-missing", "bound-below-min",
         "unique-capped"],
)  # fmt: skip
def test_a_timetable_option_that_cannot_hold_is_refused_naming_the_column(column, words):
    with pytest.raises((InvalidArgument, ValueError)) as refused:
        s.load(BASE + column + "\n", "s.toml").check(10)
    assert "tables.t.columns.c" in str(refused.value) and words in str(refused.value), str(
        refused.value
    )


def test_more_rows_of_a_slot_than_parents_is_refused_by_bfd_with_what_to_change(
    daemon: Daemon, tmp_path: Path
) -> None:
    column = 'c = { kind = "foreign_key", table = "rooms", column = "id", unique_per = "slot" }'
    text = BASE + column + "\n"
    s.load(text, "s.toml").check(10)  # 40 rows of 10 slots: 4 a slot, for 4 rooms
    spec = tmp_path / "tight.toml"
    spec.write_text(text.replace("rows = 40", "rows = 41"))  # slot 1 has 5
    dest = tmp_path / "out"
    dest.mkdir()
    refused = daemon.bfctl(
        "submit", "generate", "tight", "--spec", str(spec), "--rows", "10", "--dest", str(dest)
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (
        "tables.t.columns.c: unique per slot, but 5 rows of t share a slot and rooms has 4 "
        "rows: give rooms at least 5 rows, or t fewer"
    ) in refused.stderr, refused.stderr
    assert list(dest.iterdir()) == []
