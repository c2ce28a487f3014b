"""Hostile rows and hostile zips, cleaned in process: a bad row is a rejected row, and a zip
that would inflate past its task's bound fails alone for `memory`.

Rows are generated per (market, kind) schema from its field types, so every table is
covered by every hostile case; each case puts one bad row among good ones and expects
exactly that row rejected, with its reason, and the good ones kept.
"""

import io
import struct
import tracemalloc
import zipfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulkforge.daemon.cleaner.parse import MAX_LINE, CleanFailed, parse_zip
from bulkforge.daemon.cleaner.schema import BOOL, F64, I64, TABLES, TIME, Table
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import size_text

START_MS = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
GOOD_ROWS = 6


def good_fields(table: Table, n: int) -> list[str]:
    """Row n of a table, valid: times in ms of 2024-03-01, numbers positive and finite."""
    fields = []
    for spec in table.schema:
        if spec.type == TIME:
            offset = 59_999 if spec.name == "close_time" else 0
            fields.append(str(START_MS + n * 60_000 + offset))
        elif spec.type == F64:
            fields.append(f"{1.5 + n}")
        elif spec.type == I64:
            fields.append(str(100 + n))
        else:
            assert spec.type == BOOL
            fields.append("true" if n % 2 else "false")
    return fields


def first_of(table: Table, kind) -> str:
    return next(f.name for f in table.schema if f.type == kind)


def replaced(table: Table, column: str, value: str | bytes) -> bytes:
    fields = [field.encode() for field in good_fields(table, GOOD_ROWS)]
    fields[table.schema.names.index(column)] = value if isinstance(value, bytes) else value.encode()
    return b",".join(fields)


def a_bool_or_else_a_number(table: Table) -> str:
    return first_of(table, BOOL) if any(f.type == BOOL for f in table.schema) else "count"


def price(table: Table) -> str:
    return first_of(table, F64)


def quantity(table: Table) -> str:
    return [f.name for f in table.schema if f.type == F64][1]


# name -> (the bad row, given the table; the reason it is rejected with)
HOSTILE = {
    "invalid utf-8": (lambda t: replaced(t, price(t), b"1\xff2"), "encoding"),
    "a short row of bad bytes": (lambda t: b"\xff\xfe,1", "encoding"),
    "a letter beyond ascii": (lambda t: replaced(t, t.schema.names[-1], "tru\u00e9"), "encoding"),
    "a 10 KiB field": (lambda t: replaced(t, price(t), "9" * 10240), "field_too_large"),
    "1e999": (lambda t: replaced(t, price(t), "1e999"), "not_finite"),
    "inf": (lambda t: replaced(t, price(t), "inf"), "not_finite"),
    "-Infinity": (lambda t: replaced(t, quantity(t), "-Infinity"), "not_finite"),
    "nan": (lambda t: replaced(t, price(t), "nan"), "not_finite"),
    "negative price": (lambda t: replaced(t, price(t), "-5"), "negative"),
    "negative quantity": (lambda t: replaced(t, quantity(t), "-0.25"), "negative"),
    "negative id or count": (lambda t: replaced(t, first_of(t, I64), "-7"), "negative"),
    "not a number": (lambda t: replaced(t, price(t), "12abc"), "not_a_number"),
    "an odd quote": (lambda t: replaced(t, price(t), '"12'), "not_a_number"),
    "past int64": (lambda t: replaced(t, first_of(t, I64), "9" * 20), "not_a_number"),
    "a NUL byte": (lambda t: replaced(t, price(t), b"1\x002"), "not_a_number"),
    "empty field": (lambda t: replaced(t, price(t), ""), "empty_field"),
    "not a bool": (lambda t: replaced(t, a_bool_or_else_a_number(t), "maybe"), "not_a_bool"),
    "a field too many": (lambda t: replaced(t, price(t), "1,2"), "wrong_column_count"),
    "a time of no unit": (lambda t: replaced(t, t.time, "12345"), "time_unit"),
}


def write_csv_zip(path: Path, lines: list[bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr(path.name.removesuffix(".zip") + ".csv", b"\n".join(lines) + b"\n")
    return path


def zip_path(table: Table) -> str:
    return f"{table.market}-{table.kind}-2024-03-01.zip"


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("key", sorted(TABLES), ids=lambda key: "-".join(key))
def test_a_hostile_row_is_rejected_with_its_reason_and_the_good_rows_are_kept(
    tmp_path: Path, key: tuple[str, str], case: str
) -> None:
    table = TABLES[key]
    make, reason = HOSTILE[case]
    if case == "not a bool" and not any(f.type == BOOL for f in table.schema):
        reason = "not_a_number"  # klines have no bool: the same word in their count
    good = [",".join(good_fields(table, n)).encode() for n in range(GOOD_ROWS)]
    lines = [*good[:3], make(table), *good[3:]]
    parsed = parse_zip(write_csv_zip(tmp_path / zip_path(table), lines), table)
    assert parsed.rejected == Counter({reason: 1}), case
    assert parsed.rows_in == GOOD_ROWS + 1
    assert parsed.rows.num_rows == GOOD_ROWS
    assert parsed.rows.schema == table.schema
    assert parsed.rows[price(table)].to_pylist() == [1.5 + n for n in range(GOOD_ROWS)]


def test_every_reason_at_once_and_a_100_mb_field_beside_good_rows(tmp_path: Path) -> None:
    table = TABLES[("spot", "trades")]
    good = [",".join(good_fields(table, n)).encode() for n in range(GOOD_ROWS)]
    bad = [make(table) for make, _ in HOSTILE.values()]
    huge = replaced(table, "price", "1" * 100 * 1024**2)
    lines = [*good[:2], *bad, huge, *good[2:]]
    parsed = parse_zip(write_csv_zip(tmp_path / zip_path(table), lines), table)
    assert parsed.rows.num_rows == GOOD_ROWS
    assert parsed.rows_in == GOOD_ROWS + len(bad) + 1
    assert sum(parsed.rejected.values()) == len(bad) + 1
    assert parsed.rejected["field_too_large"] == 2 and parsed.rejected["encoding"] == 3
    assert parsed.rejected["not_finite"] == 4 and parsed.rejected["negative"] == 3


def test_a_line_just_under_the_bound_is_read_as_a_row(tmp_path: Path) -> None:
    table = TABLES[("um", "trades")]
    long_but_fine = replaced(table, "price", "1." + "0" * (MAX_LINE - 120))
    good = [",".join(good_fields(table, n)).encode() for n in range(GOOD_ROWS)]
    assert len(long_but_fine) <= MAX_LINE
    parsed = parse_zip(write_csv_zip(tmp_path / zip_path(table), [long_but_fine, *good]), table)
    assert parsed.rejected == Counter() and parsed.rows.num_rows == GOOD_ROWS + 1


# -- zips that would not fit ---------------------------------------------------------------


def _lie_about_size(path: Path, declared: int) -> None:
    """Write `declared` as the member's inflated size in its local and central headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        member = archive.infolist()[0]
    data[member.header_offset + 22 : member.header_offset + 26] = struct.pack("<L", declared)
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<L", declared)
    path.write_bytes(bytes(data))


def _big_csv_zip(path: Path, table: Table, inflated: int) -> Path:
    """A zip of good rows inflating to about `inflated` bytes (compressing ~200:1)."""
    line = ",".join(good_fields(table, 0)).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.removesuffix(".zip") + ".csv"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w") as member,
    ):
        block = line * (1024**2 // len(line))
        for _ in range(inflated // len(block)):
            member.write(block)
    return path


def _peak_while(action) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_a_zip_bomb_declared_small_fails_for_memory_without_inflating_past_the_bound(
    tmp_path: Path,
) -> None:
    table = TABLES[("um", "trades")]
    bomb = _big_csv_zip(tmp_path / zip_path(table), table, 300 * 1024**2)
    assert bomb.stat().st_size < 3 * 1024**2
    _lie_about_size(bomb, 4096)
    limit = 32 * 1024**2
    failed: list[CleanFailed] = []

    def parse() -> None:
        with pytest.raises(CleanFailed) as caught:
            parse_zip(bomb, table, limit)
        failed.append(caught.value)

    peak = _peak_while(parse)
    assert (failed[0].step, failed[0].error_class) == ("open", "memory")
    assert "inflates past" in str(failed[0])
    assert peak < 3 * limit // 2, f"{peak:,} bytes held to refuse it"
    # A lie under the bound is a bad zip (its size does not match), not a memory failure.
    with pytest.raises(CleanFailed) as small_lie:
        parse_zip(bomb, table, 1024**3)
    assert small_lie.value.error_class == "bad_zip"


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_an_honest_huge_member_fails_for_memory_at_its_declared_size(
    tmp_path: Path, method: int
) -> None:
    table = TABLES[("spot", "trades")]
    path = tmp_path / zip_path(table)
    if method == zipfile.ZIP_DEFLATED:
        _big_csv_zip(path, table, 64 * 1024**2)
    else:
        line = ",".join(good_fields(table, 0)).encode()
        write_csv_zip(path, [line] * 400_000, method)
    limit = 8 * 1024**2
    failed: list[CleanFailed] = []

    def parse() -> None:
        with pytest.raises(CleanFailed) as caught:
            parse_zip(path, table, limit)
        failed.append(caught.value)

    peak = _peak_while(parse)
    assert (failed[0].step, failed[0].error_class) == ("open", "memory")
    assert "declares" in str(failed[0]) and size_text(limit) in str(failed[0])
    assert peak < limit
    # The same zip under a bound it fits: cleaned.
    assert parse_zip(path, table, 1024**3).rows.num_rows > 0


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], (0, {})),  # an empty CSV: no rows, no failure
        ([b""], (0, {})),
        ([b"id,price,qty,quote_qty,time,is_buyer_maker"], (0, {})),  # its header only
        ([b"1," + b"9" * 5000], ("parse", "field_too_large")),  # nothing but a bad row
        ([b"\xff\xfe", b"\xff"], ("parse", "encoding")),
    ],
)
def test_a_csv_of_no_good_row_is_empty_or_fails_by_its_reason(
    tmp_path: Path, lines: list[bytes], expected: tuple
) -> None:
    table = TABLES[("um", "trades")]
    path = tmp_path / zip_path(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.csv", b"\n".join(lines))
    if expected[0] == "parse":
        with pytest.raises(CleanFailed) as failed:
            parse_zip(path, table)
        assert (failed.value.step, failed.value.error_class) == expected
        return
    parsed = parse_zip(path, table)
    assert (parsed.rows_in, dict(parsed.rejected)) == expected and parsed.rows.num_rows == 0


def test_a_byte_order_mark_before_the_header_is_no_bad_byte(tmp_path: Path) -> None:
    table = TABLES[("um", "trades")]
    good = [",".join(good_fields(table, n)).encode() for n in range(GOOD_ROWS)]
    header = b"\xef\xbb\xbfid,price,qty,quote_qty,time,is_buyer_maker"
    parsed = parse_zip(write_csv_zip(tmp_path / zip_path(table), [header, *good]), table)
    assert parsed.header and parsed.rejected == Counter() and parsed.rows.num_rows == GOOD_ROWS


def test_a_zip_bomb_in_a_clean_job_fails_alone_for_memory_and_the_rest_lands(
    make_daemon, tmp_path: Path
) -> None:
    """Under --memory-cap 1GiB with 2 CPU workers one task may inflate 128 MiB: a zip that
    declares 4 KiB and inflates to 300 MiB, and one that declares 200 MiB honestly, fail
    for memory; the good zip beside them lands, and bfd goes on."""
    table = TABLES[("um", "trades")]
    root = tmp_path / "in"
    series = root / "data/futures/um/daily/trades/BTCUSDT"
    good = [",".join(good_fields(table, n)).encode() for n in range(GOOD_ROWS)]
    write_csv_zip(series / "BTCUSDT-trades-2024-03-01.zip", good)
    bomb = _big_csv_zip(series / "BTCUSDT-trades-2024-03-02.zip", table, 300 * 1024**2)
    _lie_about_size(bomb, 4096)
    _big_csv_zip(series / "BTCUSDT-trades-2024-03-03.zip", table, 200 * 1024**2)
    daemon = make_daemon("--memory-cap", "1GiB", "--cpu-workers", "2").start()
    submitted = daemon.bfctl(
        "submit", "clean", "bomb", "--input", str(root), "--dest", str(tmp_path / "out")
    )
    assert submitted.returncode == 0, submitted.stderr
    job = daemon.wait_state("bomb", {"completed", "failed"}, timeout=180)
    assert dict(job.counts) == {"done": 1, "failed": 2}, daemon.log_tail()
    failures = daemon.bfctl_json("failures", "bomb")["failures"]
    assert {(f["item"].rsplit("-", 1)[-1], f["step"], f["error_class"]) for f in failures} == {
        ("02.zip", "open", "memory"),
        ("03.zip", "open", "memory"),
    }
    assert all(f"past the {size_text(128 * 2**20)} one" in f["error"] for f in failures), failures
    assert daemon.stub.Status(pb.JobRef(name="bomb"), timeout=10).state == "failed"
    assert "Traceback" not in daemon.log.read_text()
    assert daemon.stop() == 0, daemon.log_tail()
