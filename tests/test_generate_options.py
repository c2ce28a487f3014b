"""Every option a generator spec accepts is honoured or refused naming the column (issue 25).

A review found `unique = true` on a foreign_key silently ignored: 50 children of 100
parents held 37 distinct keys. The rule, for every column kind and every option it takes:
the output really is what the option says, or the spec is refused at submit in plain words
naming the column. The tables below give each kind with `unique`, with `null`, as a
`primary_key`, and each distribution with each parameter (`mean`, `sd`, `a`); each accepted
case is generated in-process (the spec model and the column generator bfd runs) and checked
in DuckDB: a unique column has no duplicates at the largest row count its distinct values
allow (capped for the huge ones) and is refused one row past it; a null share shows nulls;
a distribution's parameter moves the output the way it says. Each refusal names its column
and says why. Last, one refusal through a real bfd submit: exit code and words.
"""

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from conftest import Daemon

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import locale
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.columns import Dataset
from bulkforge.daemon.generator.request import preset

# Rows of the parent table p, which foreign keys and lookups point to.
PARENTS = 300
# Unique columns with more distinct values than this are made at this many rows.
MOST_ROWS = 6000
SEED = 11

PARENT = {
    "id": {"kind": "sequence", "primary_key": True},
    "name": {"kind": "pattern", "pattern": "P[0-9]{4}", "unique": True},
    "size": {"kind": "integer", "min": 1, "max": 3},
    "maybe": {"kind": "integer", "min": 1, "max": 10_000, "unique": True, "null": 0.3},
}

# kind -> (the column c, its sibling columns, how many distinct values it can take: None for
# more than MOST_ROWS). Every kind of spec.py, and the variants whose unique differs.
KINDS: dict[str, tuple[dict, dict, int | None]] = {
    "sequence": ({"kind": "sequence", "start": 5, "step": -3}, {}, None),
    "integer": ({"kind": "integer", "min": -250, "max": 249}, {}, 500),
    "integer-normal": (
        {"kind": "integer", "min": 0, "max": 99, "distribution": "normal", "mean": 50, "sd": 9},
        {},
        100,
    ),
    "integer-zipf": ({"kind": "integer", "min": 0, "max": 99, "distribution": "zipf"}, {}, 100),
    "integer-capped": (
        {"kind": "integer", "min": 1, "max": 50, "at_most": {"via": "k", "column": "size"}},
        {"k": {"kind": "foreign_key", "table": "p", "column": "id"}},
        50,
    ),
    "float": ({"kind": "float", "min": 0, "max": 1}, {}, None),
    "choice": ({"kind": "choice", "values": ["a", "b", "A", "é"]}, {}, 4),
    "choice-numbers": ({"kind": "choice", "values": [0.5, 1.5, 2.5]}, {}, 3),
    "choice-weighted": ({"kind": "choice", "values": ["a", "b"], "weights": [1, 3]}, {}, 2),
    "choice-listed-twice": ({"kind": "choice", "values": ["a", "b", "a"]}, {}, 2),
    "choice-time": (
        {"kind": "choice", "values": ["08:00", "09:30", "10:00"], "type": "time"},
        {},
        3,
    ),
    "choice-time-twice": (
        {"kind": "choice", "values": ["08:00", "08:00:00", "10:00"], "type": "time"},
        {},
        2,
    ),
    "cycle": ({"kind": "cycle", "values": [3, 1, 2]}, {}, 3),
    "cycle-repeat": ({"kind": "cycle", "values": [3, 1, 2], "repeat": 2}, {}, 3),
    "cycle-listed-twice": ({"kind": "cycle", "values": ["x", "y", "x"]}, {}, 2),
    "boolean": ({"kind": "boolean", "p": 0.3}, {}, 2),
    "date": ({"kind": "date", "start": "2024-01-01", "end": "2024-12-31"}, {}, 366),
    "timestamp": (
        {"kind": "timestamp", "start": "2024-01-01T00:00:00Z", "end": "2024-01-01T01:00:00Z"},
        {},
        3601,
    ),
    **{
        kind: ({"kind": kind}, {}, locale.size(kind))
        for kind in ("first_name", "last_name", "city", "street", "word")
    },
    **{kind: ({"kind": kind}, {}, None) for kind in ("full_name", "address", "phone")},
    # Names of one letter and a number as the last name: "x.1" + "12" and "x.11" + "2" would
    # be one email if the name kept its digits.
    "email": (
        {"kind": "email", "first": "f", "last": "l", "domains": ["example.org"]},
        {"f": {"kind": "choice", "values": ["X"]}, "l": {"kind": "integer", "min": 1, "max": 20}},
        None,
    ),
    "pattern": ({"kind": "pattern", "pattern": "[A-C]-[0-9]{2}"}, {}, 300),
    "foreign_key": ({"kind": "foreign_key", "table": "p", "column": "id"}, {}, PARENTS),
    "foreign_key-zipf": (
        {"kind": "foreign_key", "table": "p", "column": "id", "distribution": "zipf"},
        {},
        PARENTS,
    ),
    "foreign_key-unique_per": (
        {"kind": "foreign_key", "table": "p", "column": "id", "unique_per": "slot"},
        {"slot": {"kind": "cycle", "values": [1, 2]}},
        PARENTS,
    ),
    "foreign_key-to-repeating": (
        {"kind": "foreign_key", "table": "p", "column": "size"},
        {},
        PARENTS,
    ),
    "lookup": (
        {"kind": "lookup", "via": "k", "column": "name"},
        {"k": {"kind": "foreign_key", "table": "p", "column": "id"}},
        PARENTS,
    ),
    "lookup-through-unique-key": (
        {"kind": "lookup", "via": "k", "column": "name"},
        {"k": {"kind": "foreign_key", "table": "p", "column": "id", "unique": True}},
        PARENTS,
    ),
    "lookup-of-repeating": (
        {"kind": "lookup", "via": "k", "column": "size"},
        {"k": {"kind": "foreign_key", "table": "p", "column": "id", "unique": True}},
        PARENTS,
    ),
}

# kind -> the words of its refusal of unique = true: every other kind keeps it unique.
UNIQUE_REFUSED = {
    "integer-normal": "must be uniform",
    "integer-zipf": "must be uniform",
    "integer-capped": "cannot be capped by at_most",
    "float": "cannot be unique",
    "choice-weighted": "takes no weights",
    "choice-listed-twice": "lists 'a' twice",
    "choice-time-twice": "lists '08:00:00' twice (as '08:00')",
    "cycle-repeat": "repeat = 1",
    "cycle-listed-twice": "lists 'x' twice",
    "boolean": "cannot be unique",
    "foreign_key-zipf": "takes no distribution",
    "foreign_key-unique_per": "give unique or unique_per, not both",
    "foreign_key-to-repeating": "p.size, whose values repeat",
    "lookup": "k is not unique",
    "lookup-of-repeating": "p.size, whose values repeat",
}


def document(column: dict, siblings: dict, rows: int) -> str:
    child = {"rows": rows, "columns": {**siblings, "c": column}}
    return json.dumps({"tables": {"p": {"rows": PARENTS, "columns": PARENT}, "t": child}})


def made(text: str) -> tuple[s.Spec, pa.Table]:
    """The spec loaded and checked as bfd does at submit, and its table t generated."""
    spec = s.load(text, "s.json")
    counts = spec.check(1)
    return spec, Dataset(spec, counts, SEED).rows("t", 0, counts["t"])


def refusal(text: str, column: str = "c") -> str:
    with pytest.raises((InvalidArgument, ValueError)) as refused:
        made(text)
    message = str(refused.value)
    assert f"tables.t.columns.{column}" in message and "Traceback" not in message, message
    return message


def duplicates(table: pa.Table, column: str = "c") -> int:
    """Values (nulls aside) that repeat another row's, as DuckDB counts them."""
    db = duckdb.connect()
    db.register("t", table)
    return db.execute(f"SELECT count({column}) - count(DISTINCT {column}) FROM t").fetchone()[0]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_unique_holds_at_the_most_rows_its_values_allow_or_is_refused(kind: str) -> None:
    column, siblings, distinct = KINDS[kind]
    rows = min(distinct or MOST_ROWS, MOST_ROWS)
    text = document({**column, "unique": True}, siblings, rows)
    if kind in UNIQUE_REFUSED:
        assert UNIQUE_REFUSED[kind] in refusal(text)
        return
    _, table = made(text)
    assert table.num_rows == rows and table["c"].null_count == 0
    assert duplicates(table) == 0, kind
    if distinct is not None and distinct < MOST_ROWS:
        # A lookup's rows are its key's: the key is refused, naming itself.
        named = "k" if column["kind"] == "lookup" else "c"
        one_more = refusal(document({**column, "unique": True}, siblings, rows + 1), named)
        assert f"{rows + 1:,} rows" in one_more, one_more


def test_a_unique_foreign_key_is_a_permutation_of_its_parents_and_lookups_follow_it() -> None:
    """The review's case: 50 children over 100 parents, and every child up to all 300."""
    for rows in (50, PARENTS):
        column = {"kind": "foreign_key", "table": "p", "column": "id", "unique": True}
        lookup = {"kind": "lookup", "via": "c", "column": "name", "unique": True}
        spec, table = made(document(column, {"n": lookup}, rows))
        assert duplicates(table, "c") == duplicates(table, "n") == 0
        parent = Dataset(spec, spec.check(1), SEED).rows("p", 0, PARENTS)
        db = duckdb.connect()
        db.register("t", table)
        db.register("p", parent)
        joined = "SELECT count(*) FROM t JOIN p ON t.c = p.id AND t.n = p.name"
        assert db.execute(joined).fetchone() == (rows,)  # each lookup is its key's parent's


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_null_share_shows_nulls_in_every_kind(kind: str) -> None:
    column, siblings, _ = KINDS[kind]
    _, table = made(document({**column, "null": 0.4}, siblings, PARENTS))
    nulls = table["c"].null_count
    assert 0.3 * PARENTS <= nulls <= 0.5 * PARENTS, (kind, nulls)  # 40%, drawn per row
    schema = table.schema.field("c")
    assert schema.nullable, kind  # declared so: Parquet optional, no NOT NULL in SQL


def test_a_lookup_through_a_null_key_is_null() -> None:
    key = {"kind": "foreign_key", "table": "p", "column": "id", "null": 0.5}
    spec, table = made(document({"kind": "lookup", "via": "k", "column": "name"}, {"k": key}, 400))
    keys, looked = table["k"].to_pylist(), table["c"].to_pylist()
    assert 100 < keys.count(None) < 300
    assert all((k is None) == (v is None) for k, v in zip(keys, looked, strict=True))
    assert spec.nullable("t", "c")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_primary_key_is_unique_and_never_null_or_refused(kind: str) -> None:
    column, siblings, distinct = KINDS[kind]
    rows = min(distinct or MOST_ROWS, MOST_ROWS)
    keyed = {**column, "primary_key": True}
    if kind != "sequence":
        keyed["unique"] = True
    text = document(keyed, siblings, rows)
    if kind in UNIQUE_REFUSED:
        assert UNIQUE_REFUSED[kind] in refusal(text)
    else:
        _, table = made(text)
        assert table["c"].null_count == 0 and duplicates(table) == 0
        assert not table.schema.field("c").nullable
        assert "cannot be null" in refusal(document({**keyed, "null": 0.1}, siblings, rows))
    if kind != "sequence":  # a primary key must be a sequence or unique
        assert "sequence or unique" in refusal(
            document({**column, "primary_key": True}, siblings, 1)
        )


def test_a_primary_key_copying_a_column_with_nulls_is_refused() -> None:
    column = {"kind": "foreign_key", "table": "p", "column": "maybe", "unique": True}
    message = refusal(document({**column, "primary_key": True}, {}, 10))
    assert "cannot be null" in message and "copies has nulls" in message
    _, table = made(document(column, {}, PARENTS))  # unique without the key: its nulls repeat
    assert table["c"].null_count > 0 and duplicates(table) == 0


# What each distribution should do with each parameter given alone, bounds -100..100.
MIDDLE = "SELECT median(c) FROM t"
SPREAD = "SELECT stddev_pop(c) FROM t"
AT_MIN = "SELECT avg((c = (SELECT min(c) FROM t))::INT) FROM t"
EFFECTS = {
    ("normal", "mean"): (50, MIDDLE, 45, 55),
    ("normal", "sd"): (30, SPREAD, 22, 38),
    ("lognormal", "mean"): (3, MIDDLE, 15, 25),  # e^3, about 20
    ("lognormal", "sd"): (0.01, MIDDLE, 0.5, 1.5),  # e^0 = 1, barely spread
    ("zipf", "a"): (3, AT_MIN, 0.5, 1.0),  # most rows at the first value
}


@pytest.mark.parametrize("kind", ["integer", "float", "foreign_key"])
@pytest.mark.parametrize("distribution", ["uniform", "normal", "lognormal", "zipf"])
@pytest.mark.parametrize("parameter", ["mean", "sd", "a"])
def test_a_distribution_parameter_is_used_or_refused(kind, distribution, parameter) -> None:
    value = EFFECTS.get((distribution, parameter), (2,))[0]
    column = {"kind": kind, "distribution": distribution, parameter: value}
    if kind == "foreign_key":
        column |= {"table": "p", "column": "id"}
    else:
        column |= {"min": -100, "max": 100}
    text = document(column, {}, 2000)
    offered = kind != "foreign_key" or distribution in ("uniform", "zipf")
    if not offered:
        assert "distribution" in refusal(text)
        return
    if (distribution, parameter) not in EFFECTS or (kind == "foreign_key" and parameter != "a"):
        message = refusal(text)
        if kind == "foreign_key" and parameter != "a":  # not an option of a foreign key at all
            assert f"columns.c: unknown field {parameter!r}" in message, message
        else:
            assert f"{parameter} is not used by the {distribution} distribution" in message
        return
    _, table = made(text)
    _, query, low, high = EFFECTS[distribution, parameter]
    db = duckdb.connect()
    db.register("t", table)
    found = db.execute(query).fetchone()[0]
    assert low <= found <= high, (kind, distribution, parameter, found)


def test_references_to_a_key_with_nulls_is_refused() -> None:
    """A declared key names rows by their sequence: a null there is a row no value can name."""
    keyed = {"kind": "sequence", "unique": True}
    column = {"kind": "cycle", "values": [1, 2], "references": {"table": "p", "column": "id"}}
    text = json.dumps(
        {"tables": {"p": {"rows": 5, "columns": {"id": keyed}}, "t": {"columns": {"c": column}}}}
    )
    made(text)
    with pytest.raises(ValueError) as refused:
        made(text.replace('"unique": true', '"unique": true, "null": 0.2'))
    assert "tables.t.columns.c: references p.id, which has nulls" in str(refused.value)


def test_a_stored_spec_with_every_default_restores() -> None:
    """The store keeps model_dump's document, defaults and all: it is not refused later."""
    text, name = preset("courses")
    spec = s.load(text, name)
    stored = spec.model_dump(mode="json")
    assert stored["tables"]["courses"]["columns"]["capacity"]["mean"] == 0.0
    restored = s.restored(stored, spec.column_order())
    assert restored.check(2000) == spec.check(2000)


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("min = 15, max = 60,", "min = 15, max = 60, null = 0.1,", "courses.capacity has nulls"),
        ('student_id = { kind = "sequence", primary_key = true }',
         'student_id = { kind = "integer", min = 1, max = 9 }',
         "students.student_id must be a sequence or unique"),
        ('classroom_id = { kind = "sequence", primary_key = true }',
         'classroom_id = { kind = "integer", min = 1, max = 4 }',
         "not kept unique: unique_per gives distinct rows of classrooms"),
    ],
    ids=["capacity-nulls", "student-key-repeats", "unique-per-to-repeating"],
)  # fmt: skip
def test_what_enrollments_and_timetables_rely_on_is_refused_when_absent(old, new, words) -> None:
    text, name = preset("courses")
    assert old in text
    with pytest.raises((InvalidArgument, ValueError)) as refused:
        s.load(text.replace(old, new), name).check(2000)
    assert words in str(refused.value), str(refused.value)


def test_through_bfd_a_unique_foreign_key_past_its_parents_is_refused(
    daemon: Daemon, tmp_path: Path
) -> None:
    spec = tmp_path / "fk.toml"
    spec.write_text(
        "[tables.p]\nrows = 100\n[tables.p.columns]\n"
        'id = { kind = "sequence", primary_key = true }\n'
        "[tables.c]\nrows = 150\n[tables.c.columns]\n"
        'k = { kind = "foreign_key", table = "p", column = "id", unique = true }\n'
    )
    dest, second = tmp_path / "refused", tmp_path / "made"
    dest.mkdir()
    second.mkdir()
    refused = daemon.bfctl(
        "submit", "generate", "fk", "--spec", str(spec), "--dest", str(dest), "--rows", "1"
    )
    assert refused.returncode == 1, (refused.returncode, refused.stderr)
    assert "tables.c.columns.k" in refused.stderr and "only 100" in refused.stderr, refused.stderr
    assert "use unique_per" in refused.stderr and "Traceback" not in refused.stderr
    assert list(dest.iterdir()) == []
    spec.write_text(spec.read_text().replace("rows = 150", "rows = 100"))
    made = daemon.bfctl(
        "submit",
        "generate",
        "fk2",
        "--spec",
        str(spec),
        "--dest",
        str(second),
        "--rows",
        "1",
        "--format",
        "csv",
    )
    assert made.returncode == 0, made.stderr
    assert daemon.wait_state("fk2", {"completed", "failed"}).state == "completed"
    keys = (
        duckdb.connect()
        .execute(f"SELECT count(*), count(DISTINCT k) FROM '{second}/c/*.csv'")
        .fetchone()
    )
    assert keys == (100, 100)


def test_every_kind_of_the_spec_is_in_the_tables() -> None:
    """A new column kind must join the tables above (and say what it does with unique)."""
    kinds = set()
    for model in s.AnyColumn.__origin__.__args__:
        kinds |= set(model.model_fields["kind"].annotation.__args__)
    assert kinds <= {spec["kind"] for spec, _, _ in KINDS.values()}, kinds
