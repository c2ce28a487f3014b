"""One Binance zip into rows of its table's schema, and what was rejected on the way, by reason.

A file's header row (present or not by market and date) is sniffed from its first line;
the time unit (ms or µs) is read from each value, never from the file's date. A row
with the wrong number of fields, a value that is not a number, an empty field or a time
of neither unit is rejected and counted; a file none of whose rows can be read fails,
saying why (`CleanFailed` with its step: open, parse or schema).
"""

import io
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from isal import isal_zlib

from bulkforge.daemon.cleaner.schema import BOOL, F64, TIME, Table

# 13 digits: milliseconds since the epoch (2001-09 to 2286); 16: microseconds.
MS = (10**12, 10**13)
US = (10**15, 10**16)
_FLOAT = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_INT = r"^[-+]?\d+$"
_BOOLS = ["true", "false", "True", "False", "TRUE", "FALSE"]
BLOCK = 16 * 1024**2
# A zip's local file header: signature … file name length, extra field length.
LOCAL_HEADER = struct.Struct("<4s5H3L2H")


class CleanFailed(Exception):
    """This zip cannot be cleaned; step and error class say where and what."""

    def __init__(self, step: str, error_class: str, message: str):
        super().__init__(message)
        self.step = step
        self.error_class = error_class


@dataclass
class Parsed:
    """A zip's rows in its table's schema (times in µs), neither deduplicated nor sorted."""

    rows: pa.Table
    rows_in: int
    rejected: Counter = field(default_factory=Counter)
    header: bool = False
    # The time unit(s) the file's values were in: "ms", "us", both, or none (no rows).
    units: tuple[str, ...] = ()


def parse_zip(path: Path, table: Table) -> Parsed:
    """Read and normalise the one CSV inside the zip at path."""
    data = _inflate(path)
    header = _has_header(data)
    wrong_width: list[int] = [0]
    try:
        raw = _read(data, table, header, wrong_width, typed=True)
    except pa.ArrowInvalid:
        wrong_width[0] = 0  # counted again by the reading that follows
        raw = _read(data, table, header, wrong_width, typed=False)
    rejected: Counter = Counter()
    if wrong_width[0]:
        rejected["wrong_column_count"] = wrong_width[0]
    rows_in = raw.num_rows + wrong_width[0]
    if rows_in and not raw.num_rows:
        raise CleanFailed(
            "schema",
            "wrong_column_count",
            f"{path.name}: no row has the {len(table.schema)} fields of {table.market} "
            f"{table.kind}",
        )
    raw = _drop_unreadable(raw, table, rejected)
    rows, units = _normalise_times(raw, table, rejected)
    if rows_in and not rows.num_rows:
        reasons = ", ".join(f"{n:,} {why}" for why, n in rejected.most_common())
        raise CleanFailed("parse", rejected.most_common(1)[0][0], f"{path.name}: {reasons}")
    return Parsed(rows.cast(table.schema), rows_in, rejected, header, units)


def _inflate(path: Path) -> bytes:
    """The bytes of the zip's one CSV; a broken or odd zip fails at step `open`."""
    try:
        data = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                names = ", ".join(m.filename for m in members[:5]) or "nothing"
                raise CleanFailed("open", "layout", f"{path.name} holds {names}, not one CSV")
            if members[0].compress_type != zipfile.ZIP_DEFLATED:
                return archive.read(members[0])
        return _inflate_member(data, members[0])
    except (zipfile.BadZipFile, zlib.error, isal_zlib.error, EOFError) as exc:
        raise CleanFailed("open", "bad_zip", f"{path.name}: {exc}") from None
    except OSError as exc:
        raise CleanFailed("open", "io", f"{path.name}: {exc.strerror or exc}") from None


def _inflate_member(data: bytes, member: zipfile.ZipInfo) -> bytes:
    """A deflated member inflated by ISA-L, twice as fast as zlib (what zipfile would use).

    zipfile takes no other inflater, so the member's bytes are found from its local
    header here; the CRC and size are checked as zipfile checks them.
    """
    start = member.header_offset
    header = data[start : start + LOCAL_HEADER.size]
    if len(header) < LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {member.filename}")
    name_length, extra_length = LOCAL_HEADER.unpack(header)[-2:]
    begin = start + LOCAL_HEADER.size + name_length + extra_length
    inflated = isal_zlib.decompress(data[begin : begin + member.compress_size], -15)
    if len(inflated) != member.file_size or isal_zlib.crc32(inflated) != member.CRC:
        raise zipfile.BadZipFile(f"{member.filename}: CRC or size does not match")
    return inflated


def _has_header(data: bytes) -> bool:
    """A header row starts with a name (open_time, id, agg_trade_id …), data with a digit."""
    first = data[: data.find(b"\n")].lstrip(b"\xef\xbb\xbf").strip()
    return bool(first) and not first[:1].isdigit() and first[:1] != b"-"


def _read(data: bytes, table: Table, header: bool, wrong_width: list[int], typed: bool):
    def count_and_skip(_row) -> str:
        wrong_width[0] += 1
        return "skip"

    names = table.schema.names
    types = {
        f.name: (pa.int64() if f.type == TIME else f.type) if typed else pa.string()
        for f in table.schema
    }
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(header), block_size=BLOCK),
        parse_options=pacsv.ParseOptions(invalid_row_handler=count_and_skip),
        convert_options=pacsv.ConvertOptions(
            column_types=types, true_values=_BOOLS[::2], false_values=_BOOLS[1::2]
        ),
    )


def _drop_unreadable(raw: pa.Table, table: Table, rejected: Counter) -> pa.Table:
    """Rows with an empty field or (read as text) a value that is no number: rejected."""
    for spec in table.schema:
        column = raw[spec.name]
        if not pa.types.is_string(column.type):
            if not column.null_count:  # read typed: only an empty field can be wrong
                continue
            valid, reason = pc.is_valid(column), "empty_field"
        elif spec.type == BOOL:
            valid, reason = pc.is_in(column, value_set=pa.array(_BOOLS)), "not_a_bool"
        else:
            pattern = _FLOAT if spec.type == F64 else _INT
            valid, reason = pc.match_substring_regex(column, pattern), "not_a_number"
        valid = pc.fill_null(valid, False)
        bad = raw.num_rows - pc.sum(valid).as_py() if raw.num_rows else 0
        if bad:
            rejected[reason] += bad
            raw = raw.filter(valid)
    return raw


def _normalise_times(raw: pa.Table, table: Table, rejected: Counter):
    """Every time column in µs; a row with a time of neither unit is rejected."""
    units: set[str] = set()
    fits = None
    for name in table.times:
        column = raw[name].cast(pa.int64())
        is_ms = pc.and_(pc.greater_equal(column, MS[0]), pc.less(column, MS[1]))
        is_us = pc.and_(pc.greater_equal(column, US[0]), pc.less(column, US[1]))
        if pc.any(is_ms).as_py():
            units.add("ms")
        if pc.any(is_us).as_py():
            units.add("us")
        either = pc.or_(is_ms, is_us)
        fits = either if fits is None else pc.and_(fits, either)
        micros = pc.if_else(is_ms, pc.multiply(column, 1000), column)
        raw = raw.set_column(raw.schema.get_field_index(name), name, micros)
    if fits is not None:
        bad = raw.num_rows - pc.sum(fits).as_py() if raw.num_rows else 0
        if bad:
            rejected["time_unit"] += bad
            raw = raw.filter(fits)
    columns = [
        raw[f.name].cast(pa.int64()).cast(TIME) if f.type == TIME else raw[f.name].cast(f.type)
        for f in table.schema
    ]
    return pa.Table.from_arrays(columns, schema=table.schema), tuple(sorted(units))
