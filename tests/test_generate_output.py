"""Generated output is valid in every format, and a part's memory is bounded at submit (issue 24).

The rule: every spec option that becomes output refuses control characters, every number
is finite and within its bounds, and a spec the generator cannot honour exactly is refused
naming the column. A generator of specs (hypothesis) draws columns with extreme bounds,
any Unicode in every string option and regex-like patterns; each accepted spec is made and
rendered in all four formats, and read back with the real readers (pyarrow, csv, json,
sqlite3) to exactly its row count with every number within bounds. Each refused spec must
name its column. Then the issue's examples and the memory bound against a real bfd.
"""

import csv
import io
import json
import math
import sqlite3
from datetime import UTC
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import formats
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.columns import Dataset
from bulkforge.daemon.generator.request import SubmitGenerate, preset

INT64 = (-(2**63), 2**63 - 1)
FORMATS = ("parquet", "csv", "jsonl", "sql")
# Strings with whatever a reader might choke on: controls, separators, quotes, surrogates.
nasty = st.text(
    st.characters(codec=None, exclude_categories=())
    | st.sampled_from(["\n", "\r", "\x00", "\x85", "\u2028", "'", '"', "\\", ",", "\ud800"]),
    max_size=8,
)
ints = st.integers(*INT64) | st.sampled_from([*INT64, 0, 1, -1, 2**62, 2**63, -(2**64)])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e308, -1e308, 1.7976931348623157e308, 5e-324, 0.0, 2.0**53, 0.001]
)
pattern_text = st.text(st.sampled_from(list("AZaz09-_ [](){}^\\d.w,*+?é\u2028\x07")), max_size=14)
whole_seconds = st.datetimes(timezones=st.just(UTC)).map(lambda at: at.replace(microsecond=0))
distributions = st.sampled_from(["uniform", "normal", "lognormal", "zipf"])


def column_kinds() -> st.SearchStrategy[dict]:
    """Columns of every kind, with extreme or hostile options."""
    return st.one_of(
        st.fixed_dictionaries(
            {"kind": st.just("integer"), "min": ints, "max": ints},
            optional={"distribution": distributions, "mean": floats, "sd": floats, "a": floats},
        ),
        st.fixed_dictionaries(
            {"kind": st.just("float"), "min": floats, "max": floats},
            optional={
                "distribution": distributions,
                "mean": floats,
                "sd": floats,
                "a": floats,
                "digits": st.integers(0, 12),
            },
        ),
        st.fixed_dictionaries(
            {"kind": st.just("choice"), "values": st.lists(nasty, min_size=1, max_size=4)},
            optional={"weights": st.lists(floats, min_size=1, max_size=4)},
        ),
        st.fixed_dictionaries(
            {"kind": st.just("choice"), "values": st.lists(ints | floats, min_size=1, max_size=3)}
        ),
        st.fixed_dictionaries(
            {"kind": st.just("cycle"), "values": st.lists(nasty | ints, min_size=1, max_size=3)}
        ),
        st.fixed_dictionaries(
            {
                "kind": st.just("email"),
                "first": st.just("f"),
                "last": st.just("seq"),
                "domains": st.lists(nasty | st.just("example.org"), min_size=1, max_size=3),
            }
        ),
        st.fixed_dictionaries({"kind": st.just("pattern"), "pattern": pattern_text}),
        st.fixed_dictionaries({"kind": st.just("sequence"), "start": ints, "step": ints}),
        st.fixed_dictionaries(
            {
                "kind": st.just("timestamp"),
                "start": whole_seconds | st.datetimes(timezones=st.just(UTC)),
                "end": whole_seconds,
            }
        ),
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["date"]), "start": st.dates(), "end": st.dates()}
        ),
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["city", "full_name", "address", "phone", "word"])}
        ),
        st.fixed_dictionaries(
            {"kind": st.just("enrollments_grades"), "grades": st.lists(nasty, max_size=3)}
        ),
    )


def document(columns: list[dict]) -> tuple[dict, list[str]]:
    """A spec of one table t: a key, a first name for emails, and the drawn columns, with a
    child table keyed into t (each drawn column is named c0, c1 …)."""
    drawn = {f"c{index}": column for index, column in enumerate(columns)}
    grades = [name for name, column in drawn.items() if column["kind"] == "enrollments_grades"]
    for name in grades:  # grades live in an enrollments table: made a choice like theirs
        drawn[name] = {"kind": "choice", "values": drawn[name]["grades"] or ["A"], "null": 0.5}
    table = {"seq": {"kind": "sequence", "primary_key": True}, "f": {"kind": "first_name"}}
    child = {"k": {"kind": "foreign_key", "table": "t", "column": "seq"}}
    child |= {f"l{name}": {"kind": "lookup", "via": "k", "column": name} for name in drawn}
    tables = {"t": {"columns": table | drawn}, "u": {"scale": 0.5, "columns": child}}
    return {"tables": tables}, list(drawn)


def as_json(value) -> str:
    return json.dumps(value, default=lambda v: v.isoformat())


def bounds(spec: s.Spec) -> dict[tuple[str, str], tuple]:
    """(table, column) -> (low, high) of every number column, through lookups too."""
    found = {}
    for table_name, table in spec.tables.items():
        for name, column in table.columns.items():
            if isinstance(column, s.Lookup):
                column = spec.tables["t"].columns[column.column]
            if isinstance(column, s.Integers | s.Floats):
                found[table_name, name] = (column.min, column.max, isinstance(column, s.Integers))
    return found


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_back(spec: s.Spec, dataset: Dataset, table: str, fmt: str, made: pa.Table) -> list[dict]:
    """The rendered part parsed by the real reader for its format, as rows of dicts."""
    data = formats.render(made, fmt, table)
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    if fmt == "jsonl":
        lines = data.decode().split("\n")
        assert lines[-1] == "" and len(lines) == made.num_rows + 1
        return [json.loads(line, parse_constant=reject_constant) for line in lines[:-1]]
    types = {name: {f.name: f.type for f in dataset.table(name).rows(0, 1).schema} for name in "tu"}
    db = sqlite3.connect(":memory:")
    db.executescript(formats.create_tables(spec, ["t", "u"], types, "sqlite"))
    db.executescript(data.decode())
    db.row_factory = sqlite3.Row
    return [dict(row) for row in db.execute(f'SELECT * FROM "{table}"')]


def loads_as_postgres(spec: s.Spec, dataset: Dataset, counts: dict[str, int]) -> None:
    """The postgres dialect's schema and parts run in DuckDB (which speaks its SQL)."""
    types = {name: {f.name: f.type for f in dataset.table(name).rows(0, 1).schema} for name in "tu"}
    db = duckdb.connect()
    db.execute(formats.create_tables(spec, ["t", "u"], types, "postgres"))
    for table in ("t", "u"):
        made = dataset.table(table).rows(0, counts[table])
        db.execute(formats.render(made, "sql", table, "postgres").decode())
        assert db.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (counts[table],)


def number(value, integer: bool):
    """A value read back as the number it says (CSV gives text; "" is a null there)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return int(value) if integer else float(value)
    return value


REFUSED: dict[str, str] = {}  # kind -> one refusal seen, for the report


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(columns=st.lists(column_kinds(), min_size=1, max_size=3), rows=st.integers(1, 40))
def test_every_accepted_spec_reads_back_in_every_format_and_every_refusal_names_its_column(
    columns, rows
):
    text, drawn = document(columns)
    try:
        spec = s.load(as_json(text), "s.json")
        counts = spec.check(rows)
    except (InvalidArgument, ValueError) as refused:
        message = str(refused)
        assert any(f"columns.{name}" in message for name in drawn), message
        assert "Traceback" not in message
        REFUSED.setdefault(columns[0]["kind"], message[:160])
        return
    dataset = Dataset(spec, counts, 1)
    numeric = bounds(spec)
    loads_as_postgres(spec, dataset, counts)
    for table in ("t", "u"):
        made = dataset.table(table).rows(0, counts[table])
        for fmt in FORMATS:
            back = read_back(spec, dataset, table, fmt, made)
            assert len(back) == counts[table], (fmt, table)
            for (where, name), (low, high, integer) in numeric.items():
                if where != table:
                    continue
                for value in (number(row[name], integer) for row in back):
                    if value is None:
                        continue
                    assert math.isfinite(value), (fmt, name, value)
                    # Text formats carry the shortest repr: it reads back as the same double.
                    assert low <= value <= high, (fmt, name, value, low, high)


# -- the issue's examples and other instances, as a table of refusals -------------------------

BASE = '[tables.t.columns]\nfirst = { kind = "first_name" }\nlast = { kind = "last_name" }\n'


@pytest.mark.parametrize(
    ("column", "words"),
    [
        ('c = { kind = "email", first = "first", last = "last", domains = ["a\\nb.org"] }',
         "control characters"),
        ('c = { kind = "email", first = "first", last = "last", domains = ["a b.org"] }',
         "not a host name"),
        ('c = { kind = "email", first = "first", last = "last", domains = ["x\\u2028.org"] }',
         "control characters"),
        ('c = { kind = "choice", values = ["ok", "\\u0085"] }', "control characters"),
        ('c = { kind = "cycle", values = ["\\u001b[31m"] }', "control characters"),
        ('c = { kind = "choice", values = [1, 100000000000000000000] }', "64-bit integer"),
        ('c = { kind = "choice", values = [1.0, inf] }', "finite"),
        ('c = { kind = "choice", values = ["a", "b"], weights = [1e308, 1e308] }',
         "past the largest float"),
        ('c = { kind = "float", min = -inf, max = 1 }', "finite"),
        ('c = { kind = "float", min = 0, max = 1, mean = nan, distribution = "normal" }',
         "finite"),
        ('c = { kind = "float", min = -1e308, max = 1e308, distribution = "zipf" }', "2^53"),
        ('c = { kind = "float", min = 0.001, max = 0.002, digits = 2 }', "no value of 2 digits"),
        ('c = { kind = "pattern", pattern = "[A-Z]{99999}" }', "over the limit of 200"),
        ('c = { kind = "pattern", pattern = "[A-Z]{150}[0-9]{51}" }', "more than 200"),
        ('c = { kind = "pattern", pattern = "[A-Z]{2,5}" }', "a count is {N}"),
        ('c = { kind = "pattern", pattern = "[^a-z]" }', "negated"),
        ('c = { kind = "pattern", pattern = "\\\\w{3}" }', "not a class"),
        ('c = { kind = "pattern", pattern = "[A-Z" }', "not closed"),
        ('c = { kind = "pattern", pattern = "[A-Z]+" }', "repeats in a regex"),
        ('c = { kind = "pattern", pattern = "[ -\\u00ff]" }', "control characters"),
        ('c = { kind = "pattern", pattern = "[ -\\U0010ffff]" }', "more than 4096"),
        ('c = { kind = "timestamp", start = 2020-01-01T00:00:00.5Z, end = 2021-01-01T00:00:00Z }',
         "whole seconds"),
    ],
    ids=["domain-newline", "domain-space", "domain-line-separator", "choice-c1-control",
         "cycle-escape", "choice-int-overflow", "choice-inf", "weights-overflow", "float-inf",
         "mean-nan", "zipf-float-span", "digits-none-between", "count-99999", "pattern-too-long",
         "count-range", "negated-class", "unknown-escape", "unclosed-class", "quantifier",
         "class-of-controls", "class-too-large", "subsecond-timestamp"],
)  # fmt: skip
def test_a_spec_that_cannot_be_made_exactly_is_refused_naming_the_column(column, words):
    with pytest.raises((InvalidArgument, ValueError)) as refused:
        s.load(BASE + column + "\n", "s.toml").check(10)
    assert "tables.t.columns.c" in str(refused.value) and words in str(refused.value), str(
        refused.value
    )


@pytest.mark.parametrize(
    ("column", "fmt", "dialect", "words"),
    [
        ('c = { kind = "email", first = "first", last = "last", domains = ["'
         + ".".join(["d" * 60] * 4) + '"] }', "sql", "mysql", "VARCHAR(255)"),
        ('c = { kind = "choice", values = ["' + "é" * 256 + '"] }', "sql", "mysql",
         "256 characters"),
        ('c = { kind = "date", start = 0999-01-01, end = 2000-01-01 }', "sql", "mysql", "year 999"),
        ('c = { kind = "foreign_key", table = "p", column = "v" }\n[tables.p.columns]\n'
         'v = { kind = "integer", min = 0, max = 9 }', "sql", "sqlite",
         "neither unique nor a primary key"),
    ],
    ids=["mysql-email-too-long", "mysql-choice-too-long", "mysql-year-999", "key-to-non-key"],
)  # fmt: skip
def test_what_a_format_cannot_hold_is_refused_for_that_format(column, fmt, dialect, words):
    text = BASE + column + "\n"
    for chosen, refused in ((fmt, True), ("parquet", False)):
        request = SubmitGenerate(
            name="g", spec_text=text, spec_name="s.toml", rows=10, format=chosen,
            sql_dialect=dialect if chosen == "sql" else "", dest="/tmp/unused",
        )  # fmt: skip
        if not refused:
            request.request()
            continue
        with pytest.raises(InvalidArgument) as refusal:
            request.request()
        assert "tables.t.columns.c" in str(refusal.value) and words in str(refusal.value)


def test_extreme_bounds_are_honoured_not_overflowed() -> None:
    """What used to overflow: +-1e308 floats, int64-edge integers, rounding near the top."""
    text = BASE + "\n".join(
        [
            'a = { kind = "float", min = -1e308, max = 1e308 }',
            'b = { kind = "float", min = -1.7976931348623157e308, max = 1.7976931348623157e308,'
            ' distribution = "normal", sd = 1e308 }',
            'c = { kind = "integer", min = 9223372036854775000, max = 9223372036854775807,'
            ' distribution = "normal", mean = 9.3e18, sd = 1e18 }',
            'd = { kind = "integer", min = -9223372036854775808, max = -4611686018427387905,'
            ' distribution = "zipf", a = 0.01 }',
            'e = { kind = "float", min = 1e300, max = 1.5e300, digits = 2 }',
            'f = { kind = "float", min = 0.004, max = 0.016, digits = 2,'
            ' distribution = "lognormal" }',
        ]
    )
    spec = s.load(text + "\n", "s.toml")
    table = Dataset(spec, spec.check(5000), 3).table("t").rows(0, 5000)
    for name in "abcdef":
        column = spec.tables["t"].columns[name]
        values = table[name].to_pylist()
        assert all(column.min <= v <= column.max for v in values), name
        assert all(math.isfinite(v) for v in values), name
    assert len(set(table["a"].to_pylist())) > 4000  # spread over the range, not one value
    assert set(table["f"].to_pylist()) <= {0.01}


def test_a_uniform_integer_over_a_wide_span_reaches_every_low_bit() -> None:
    """Past 2^53 values a float's draw skipped all but every 2^k-th integer: no longer."""
    spec = s.load(BASE + 'w = { kind = "integer", min = 0, max = 4611686018427387902 }\n', "s.toml")
    values = Dataset(spec, spec.check(20000), 1).table("t").rows(0, 20000)["w"].to_pylist()
    assert all(0 <= v <= 2**62 - 2 for v in values)
    assert len({v % 1024 for v in values}) == 1024 and any(v % 2 for v in values)


def test_the_bundled_data_and_presets_hold_no_control_characters() -> None:
    from bulkforge.daemon.generator import locale

    for kind in (*locale.WORD_LISTS, "street_suffixes", "phone_formats"):
        values = locale.words_of(kind)
        assert values and all(s.unprintable(v) is None for v in values), kind
    text, name = preset("courses")
    s.load(text, name).check(1000)


# -- the real daemon: the issue's examples end to end, and the memory bound -------------------


def submit(daemon: Daemon, name: str, spec: Path, dest: Path, *args: str):
    dest.mkdir(parents=True, exist_ok=True)
    return daemon.bfctl("submit", "generate", name, "--spec", str(spec), "--dest", str(dest), *args)


def test_through_bfd_bad_domains_are_refused_and_wide_floats_load_everywhere(
    daemon: Daemon, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        BASE
        + 'e = { kind = "email", first = "first", last = "last", domains = ["x.org\\nEVIL"] }\n'
    )
    refused = submit(daemon, "bad", bad, tmp_path / "bad", "--rows", "50", "--format", "jsonl")
    assert refused.returncode == 1 and "tables.t.columns.e" in refused.stderr, refused.stderr
    assert "control characters" in refused.stderr and "Traceback" not in refused.stderr
    assert list((tmp_path / "bad").iterdir()) == []
    wide = tmp_path / "wide.toml"
    wide.write_text(
        BASE
        + 'id = { kind = "sequence", primary_key = true }\n'
        + 'x = { kind = "float", min = -1e308, max = 1e308 }\n'
        + 'code = { kind = "pattern", pattern = "[A-Z]{200}" }\n'
    )
    for fmt in FORMATS:
        dest = tmp_path / fmt
        made = submit(daemon, fmt, wide, dest, "--rows", "50", "--format", fmt)
        assert made.returncode == 0, made.stderr
        assert daemon.wait_state(fmt, {"completed", "failed"}).state == "completed"
    assert pq.read_table(tmp_path / "parquet" / "t").num_rows == 50
    lines = (tmp_path / "jsonl" / "t" / "part-00000.jsonl").read_text().split("\n")
    documents = [json.loads(line, parse_constant=reject_constant) for line in lines[:-1]]
    assert len(documents) == 50 and all(len(d["code"]) == 200 for d in documents)
    assert all(math.isfinite(d["x"]) and abs(d["x"]) <= 1e308 for d in documents)
    with (tmp_path / "csv" / "t" / "part-00000.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 50
    db = sqlite3.connect(tmp_path / "t.db")
    db.executescript((tmp_path / "sql" / "schema.sql").read_text())
    db.executescript((tmp_path / "sql" / "t" / "part-00000.sql").read_text())
    assert db.execute("SELECT count(*), max(abs(x)) <= 1e308 FROM t").fetchone() == (50, 1)


WIDE_STRINGS = (
    '[tables.t.columns]\nid = { kind = "sequence" }\n'
    'w = { kind = "pattern", pattern = "[a-z]{200}" }\n'
)


LONG_NAMES = "[tables.t.columns]\n" + "".join(
    f'{"c" * 60}{index:02d} = {{ kind = "integer", min = 0, max = 9 }}\n' for index in range(20)
)


@pytest.mark.parametrize(
    ("flags", "rows", "chunk_rows", "spec", "fmt", "refused"),
    [
        # The issue's: 10^10 rows in parts of 10^8, and one part of 10^8 rows.
        ((), 10**10, 10**8, "courses", "parquet", "a part of students (100,000,000 rows"),
        ((), 10**8, 10**8, "courses", "parquet", "give chunk_rows"),
        # The default part fits the default cap (2 GiB over 2 workers) …
        (("--cpu-workers", "2"), 10**6, 0, "courses", "parquet", None),
        # … but not a cap of 256 MiB over 2 workers, nor text of 200-character strings.
        (("--cpu-workers", "2", "--memory-cap", "256MiB"), 10**6, 0, "courses", "parquet",
         "over the 134 MB one task may use"),
        (("--cpu-workers", "2"), 10**6, 0, WIDE_STRINGS, "jsonl", "column widths: id 8, w 204"),
        (("--cpu-workers", "2"), 10**6, 100_000, WIDE_STRINGS, "jsonl", None),
        # Without a cap, a part may use 2 GiB, whatever the workers.
        (("--cpu-workers", "8", "--memory-cap", "0"), 10**6, 0, "courses", "jsonl", None),
        (("--cpu-workers", "8", "--memory-cap", "0"), 10**7, 10**7, "courses", "parquet",
         "without a memory cap"),
        # Output that cannot fit the dest's filesystem even at its least (keys alone: 13 TB).
        (("--cpu-workers", "2"), 10**10, 10_000, LONG_NAMES, "jsonl", "more than the"),
        # A cap so small that not one row fits says so.
        (("--cpu-workers", "2", "--memory-cap", "64MiB"), 1000, 10, "courses", "parquet",
         "not even one row fits"),
    ],
    ids=["issue-1e10", "issue-1e8-part", "default", "cap-256MiB", "wide-jsonl", "wide-jsonl-split",
         "uncapped", "uncapped-1e7", "output-past-the-disk", "tiny-cap"],
)  # fmt: skip
def test_a_part_that_cannot_fit_the_per_task_memory_is_refused_at_submit(
    make_daemon, tmp_path: Path, flags, rows, chunk_rows, spec, fmt, refused
) -> None:
    daemon = make_daemon(*flags).start()
    args = ["--rows", str(rows), "--format", fmt, "--dest", str(tmp_path / "out")]
    if chunk_rows:
        args += ["--chunk-rows", str(chunk_rows)]
    if spec == "courses":
        args += ["--preset", "courses"]
    else:
        (tmp_path / "s.toml").write_text(spec)
        args += ["--spec", str(tmp_path / "s.toml")]
    (tmp_path / "out").mkdir()
    answer = daemon.bfctl("submit", "generate", "g", *args)
    if refused is None:
        assert answer.returncode == 0, answer.stderr
        daemon.bfctl("cancel", "g")
    else:
        assert answer.returncode == 1, answer.stdout
        assert refused in answer.stderr, answer.stderr
        assert "Traceback" not in answer.stderr
        assert daemon.bfctl("status", "g").returncode != 0  # no job was made
        assert list((tmp_path / "out").iterdir()) == []
    assert daemon.stop() == 0, daemon.log_tail()


def test_the_estimate_stays_above_a_measured_part(tmp_path: Path) -> None:
    """One real part per format, made in a fresh process: its peak RSS over its start stays
    under the estimate (the estimate is what the submit-time bound compares)."""
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    for fmt in FORMATS:
        for table in ("students", "enrollments"):
            peak, estimate = _measure(script, table, fmt)
            assert peak < estimate, (fmt, table, peak, estimate)


def _measure(script: Path, table: str, fmt: str) -> tuple[int, int]:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(script), table, fmt, "300000"],
        capture_output=True,
        text=True,
        check=True,
    )
    peak, estimate = map(int, done.stdout.split())
    return peak, estimate


MEASURE = """
import os, sys
os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
import psutil
from bulkforge.daemon.generator import formats, spec as s, widths
from bulkforge.daemon.generator.columns import Dataset
from bulkforge.daemon.generator.parts import few_values
from bulkforge.daemon.generator.request import SubmitGenerate, preset
table, fmt, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = s.load(*preset("courses"))
counts = model.check(1_000_000)
dataset = Dataset(model, counts, 1)
few = few_values(dataset, table)
formats.render(dataset.table(table).rows(0, 1000), fmt, table, "sqlite", few)
def high_water() -> int:
    # VmHWM, the peak RSS of this process's memory, not ru_maxrss: that one starts at the
    # RSS of the parent that forked it (pytest, hundreds of MB after other tests).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from here
base = psutil.Process().memory_info().rss
data = formats.render(dataset.table(table).rows(0, rows), fmt, table, "sqlite", few)
peak = high_water() - base
print(peak, widths.row_memory(model, counts, table, fmt) * rows)
"""
