"""One Binance zip into rows of its table's schema, and what was rejected on the way, by reason.

A file's header row (present or not by market and date) is sniffed from its first line;
the time unit (ms or µs) is read from each value, never from the file's date. A bad row
is a rejected row, never a failed file: a line longer than any row can be
(`field_too_large`), a byte that is not ASCII (`encoding`: every field is a number or a
bool), the wrong number of fields, a value that is not a number, an empty field, a time
of neither unit, a price or quantity that is not finite or is negative: each is rejected
and counted by reason. A file none of whose rows can be read fails, saying why
(`CleanFailed` with its step: open, parse or schema).

Memory: the CSV is inflated in bounded blocks into a buffer of its declared size, and
neither its declared nor its actual size may pass the task's bound (`limit`); a zip
past it fails alone, with error class `memory`, before it can take the worker down.
"""

import io
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from isal import isal_zlib

from bulkforge.daemon.cleaner.schema import BOOL, F64, TIME, Table
from bulkforge.daemon.cleaner.work import MAX_INFLATED
from bulkforge.proto.inputs import UnsafeInput, open_regular
from bulkforge.proto.units import size_text

# 13 digits: milliseconds since the epoch (2001-09 to 2286); 16: microseconds.
MS = (10**12, 10**13)
US = (10**15, 10**16)
# A decimal, or a spelling of infinity or NaN: read, then rejected as `not_finite`, as
# `1e999` is (the typed reading takes them all as floats too).
_FLOAT = r"^[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|(?i:inf|infinity|nan))$"
# At most 18 digits: every such integer fits in int64.
_INT = r"^[-+]?\d{1,18}$"
_BOOLS = ["true", "false", "True", "False", "TRUE", "FALSE"]
BLOCK = 16 * 1024**2
# No row of any table is longer (12 fields of at most 20 characters); a longer line is a
# hostile or broken one, rejected before the CSV reader sees it (it would fail the block).
MAX_LINE = 4096
# Inflated in blocks of this size, so that a zip's actual size is checked as it grows.
INFLATE_BLOCK = 4 * 1024**2
# Lines are checked in blocks of this size (the scratch arrays are a few times larger).
SCAN_BLOCK = 4 * 1024**2
BOM = b"\xef\xbb\xbf"
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


def parse_zip(
    path: Path, table: Table, limit: int = MAX_INFLATED, root: Path | None = None
) -> Parsed:
    """Read and normalise the one CSV inside the zip at path (inflated to at most limit
    bytes; a regular file, inside root if given)."""
    try:
        return _parse(path, table, limit, root)
    except pa.ArrowException as exc:  # a row no rule above foresaw: this zip fails, alone
        raise CleanFailed("parse", "unreadable", f"{path.name}: {exc}") from None


def _parse(path: Path, table: Table, limit: int, root: Path | None) -> Parsed:
    rejected: Counter = Counter()
    data = _drop_bad_lines(_inflate(path, limit, root), rejected)
    dropped = sum(rejected.values())  # rows the CSV reader never sees
    header = _has_header(data)
    wrong_width: list[int] = [0]
    try:
        raw = _read(data, table, header, wrong_width, typed=True)
    except pa.ArrowInvalid:
        wrong_width[0] = 0  # counted again by the reading that follows
        raw = _read(data, table, header, wrong_width, typed=False)
    if wrong_width[0]:
        rejected["wrong_column_count"] = wrong_width[0]
    rows_in = raw.num_rows + wrong_width[0] + dropped
    if rows_in and not raw.num_rows and not dropped:
        raise CleanFailed(
            "schema",
            "wrong_column_count",
            f"{path.name}: no row has the {len(table.schema)} fields of {table.market} "
            f"{table.kind}",
        )
    raw = _drop_unreadable(raw, table, rejected)
    rows, units = _normalise_times(raw, table, rejected)
    rows = _drop_out_of_range(rows, table, rejected)
    rejected = +rejected  # without reasons counted zero times
    if rows_in and not rows.num_rows:
        reasons = ", ".join(f"{n:,} {why}" for why, n in rejected.most_common())
        raise CleanFailed("parse", rejected.most_common(1)[0][0], f"{path.name}: {reasons}")
    return Parsed(rows.cast(table.schema), rows_in, rejected, header, units)


def _inflate(path: Path, limit: int, root: Path | None) -> bytearray:
    """The bytes of the zip's one CSV; a broken or odd zip fails at step `open`."""
    try:
        with open_regular(path, root) as file, zipfile.ZipFile(file) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                names = ", ".join(m.filename for m in members[:5]) or "nothing"
                raise CleanFailed("open", "layout", f"{path.name} holds {names}, not one CSV")
            member = members[0]
            if member.file_size > limit:
                raise _too_large(path, f"declares {size_text(member.file_size)}", limit)
            if member.compress_type != zipfile.ZIP_DEFLATED:
                return _read_member(path, archive, member, limit)
            return _inflate_member(path, file, member, limit)
    except (zipfile.BadZipFile, zlib.error, isal_zlib.error, EOFError) as exc:
        raise CleanFailed("open", "bad_zip", f"{path.name}: {exc}") from None
    except UnsafeInput as exc:
        raise CleanFailed("open", exc.reason, f"{path.name}: {exc.why}") from None
    except OSError as exc:
        raise CleanFailed("open", "io", f"{path.name}: {exc.strerror or exc}") from None


def _too_large(path: Path, what: str, limit: int) -> CleanFailed:
    return CleanFailed(
        "open",
        "memory",
        f"{path.name}: its CSV {what}, past the {size_text(limit)} one cleaning task may hold "
        f"(--memory-cap / --cpu-workers / 4, or {size_text(4 * 1024**3)} with no cap)",
    )


def _read_member(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, limit: int):
    """A member stored (or packed otherwise) read in blocks; zipfile checks its CRC."""
    out = bytearray()
    with archive.open(member) as stream:
        while block := stream.read(INFLATE_BLOCK):
            out += block
            if len(out) > limit:
                raise _too_large(path, f"holds more than {size_text(limit)}", limit)
    return out


def _inflate_member(path: Path, file, member: zipfile.ZipInfo, limit: int) -> bytearray:
    """A deflated member inflated by ISA-L, twice as fast as zlib (what zipfile would use),
    in bounded blocks into a buffer of its declared size.

    zipfile takes no other inflater, so the member's bytes are found from its local
    header here; the CRC and size are checked as zipfile checks them. A member that
    inflates past its declared size is read on (its output dropped) only to say
    whether it passes the bound too: then it fails for memory, else as a bad zip.
    """
    file.seek(member.header_offset)
    header = file.read(LOCAL_HEADER.size)
    if len(header) < LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {member.filename}")
    name_length, extra_length = LOCAL_HEADER.unpack(header)[-2:]
    file.seek(name_length + extra_length, io.SEEK_CUR)
    out = bytearray(member.file_size)
    view, filled, crc = memoryview(out), 0, 0
    inflater = isal_zlib.decompressobj(-15)
    left = member.compress_size
    pending = b""
    while not inflater.eof:
        if not pending:
            pending = file.read(min(INFLATE_BLOCK, left)) if left > 0 else b""
            left -= len(pending)
            if not pending:
                break
        block = inflater.decompress(pending, INFLATE_BLOCK)
        pending = inflater.unconsumed_tail
        if filled + len(block) > member.file_size:
            _beyond_declared(path, inflater, pending, file, left, filled + len(block), limit)
        view[filled : filled + len(block)] = block
        filled += len(block)
        crc = isal_zlib.crc32(block, crc)
    view.release()  # the buffer may be cut in place later: no view of it may remain
    if filled != member.file_size or crc != member.CRC:
        raise zipfile.BadZipFile(f"{member.filename}: CRC or size does not match")
    return out


def _beyond_declared(path: Path, inflater, pending: bytes, file, left: int, size: int, limit):
    """A member inflating past its declared size: how far, up to the bound, and why it fails."""
    while size <= limit and not inflater.eof:
        if not pending:
            pending = file.read(min(INFLATE_BLOCK, left)) if left > 0 else b""
            left -= len(pending)
            if not pending:
                break
        size += len(inflater.decompress(pending, INFLATE_BLOCK))
        pending = inflater.unconsumed_tail
    if size > limit:
        raise _too_large(path, f"inflates past {size_text(limit)} (it declares fewer)", limit)
    raise zipfile.BadZipFile(f"{path.name}: its CSV inflates past its declared size")


def _drop_bad_lines(data: bytearray, rejected: Counter) -> bytearray:
    """data without the lines the CSV reader must never see, each rejected by reason:
    longer than any row can be (`field_too_large`: the reader fails a row longer than its
    block), or holding a byte that is not ASCII (`encoding`: the reader fails a row it
    cannot decode when the row is also of the wrong width).

    Scanned in blocks (bounded scratch arrays); the lines are cut out in place.
    """
    bad: list[tuple[int, int]] = []
    start = len(BOM) if data[:3] == BOM else 0  # a UTF-8 byte-order mark is no row's byte
    first, high_before = start, 0  # the current line's start, its non-ASCII bytes so far
    for offset in range(start, len(data), SCAN_BLOCK):
        block = np.frombuffer(
            data, dtype=np.uint8, count=min(SCAN_BLOCK, len(data) - offset), offset=offset
        )
        ends = np.flatnonzero(block == 10)
        high = _high_before_each(block)
        starts = np.concatenate(([first - offset], ends[:-1] + 1))[: len(ends)]
        counts = high[ends] - high[np.maximum(starts, 0)]
        if len(ends):
            counts[0] += high_before
        for n in np.flatnonzero((ends - starts > MAX_LINE) | (counts > 0)):
            reason = "field_too_large" if ends[n] - starts[n] > MAX_LINE else "encoding"
            bad.append((int(starts[n]) + offset, int(ends[n]) + offset + 1))
            rejected[reason] += 1
        if len(ends):
            first, high_before = int(ends[-1]) + offset + 1, int(high[-1] - high[ends[-1] + 1])
        else:
            high_before += int(high[-1])
    block = None  # the last view of data released: _cut resizes it
    if len(data) > first and (len(data) - first > MAX_LINE or high_before):
        rejected["field_too_large" if len(data) - first > MAX_LINE else "encoding"] += 1
        bad.append((first, len(data)))
    return _cut(data, bad) if bad else data


def _high_before_each(block: np.ndarray) -> np.ndarray:
    """For each position i of block (and its end): how many bytes before i are not ASCII."""
    if not len(block) or block.max() < 0x80:
        return np.zeros(len(block) + 1, dtype=np.int32)
    return np.concatenate(([0], np.cumsum(block >= 0x80, dtype=np.int32)))


def _cut(data: bytearray, spans: list[tuple[int, int]]) -> bytearray:
    """data without the spans (in order, apart), moved down in place: no second copy."""
    view, written, at = memoryview(data), 0, 0
    for begin, end in [*spans, (len(data), len(data))]:
        view[written : written + begin - at] = view[at:begin]
        written += begin - at
        at = end
    view.release()
    del data[written:]
    return data


def _has_header(data: bytearray) -> bool:
    """A header row starts with a name (open_time, id, agg_trade_id …), data with a digit."""
    end = data.find(b"\n")
    first = bytes(data[: end if end >= 0 else MAX_LINE]).lstrip(BOM).strip()
    return bool(first) and not first[:1].isdigit() and first[:1] != b"-"


def _read(data: bytes, table: Table, header: bool, wrong_width: list[int], typed: bool):
    def count_and_skip(_row) -> str:
        wrong_width[0] += 1
        return "skip"

    names = table.schema.names
    # Read untyped as bytes, not text: a byte that is not UTF-8 is a rejected row, not an error.
    types = {
        f.name: (pa.int64() if f.type == TIME else f.type) if typed else pa.binary()
        for f in table.schema
    }
    body = pa.py_buffer(data)
    if header:  # skipped here: the reader fails a file that is its header alone
        end = data.find(b"\n")
        body = body.slice(end + 1 if end >= 0 else len(data))
    if not body.size:  # no row at all (an empty CSV, a header, only bad lines): no rows
        return pa.schema([(name, types[name]) for name in names]).empty_table()
    return pacsv.read_csv(
        pa.BufferReader(body),
        read_options=pacsv.ReadOptions(column_names=names, block_size=BLOCK),
        # Binance never quotes: an odd quote is a bad value, never a field across lines.
        parse_options=pacsv.ParseOptions(quote_char=False, invalid_row_handler=count_and_skip),
        # Only an empty field is null (`empty_field`): "nan" or "NULL" are values, checked.
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            true_values=_BOOLS[::2],
            false_values=_BOOLS[1::2],
            null_values=[""],
            strings_can_be_null=True,
        ),
    )


def _drop_unreadable(raw: pa.Table, table: Table, rejected: Counter) -> pa.Table:
    """Rows with an empty field or (read as bytes) a byte that is not ASCII or a value that
    is no number: rejected."""
    raw = _drop_non_ascii(raw, rejected)
    for spec in table.schema:
        if raw[spec.name].null_count:  # only an empty field reads as null
            raw = _keep(raw, pc.is_valid(raw[spec.name]), "empty_field", rejected)
        column = raw[spec.name]
        if not pa.types.is_string(column.type):
            continue  # read typed: its values are what the schema wants
        if spec.type == BOOL:
            valid, reason = pc.is_in(column, value_set=pa.array(_BOOLS)), "not_a_bool"
        else:
            pattern = _FLOAT if spec.type == F64 else _INT
            valid, reason = pc.match_substring_regex(column, pattern), "not_a_number"
        raw = _keep(raw, valid, reason, rejected)
    return raw


def _keep(raw: pa.Table, valid, reason: str, rejected: Counter) -> pa.Table:
    """The rows where valid holds; the others counted as rejected for reason."""
    valid = pc.fill_null(valid, False)
    bad = raw.num_rows - pc.sum(valid).as_py() if raw.num_rows else 0
    if not bad:
        return raw
    rejected[reason] += bad
    return raw.filter(valid)


def _drop_non_ascii(raw: pa.Table, rejected: Counter) -> pa.Table:
    """Rows read as bytes with a byte that is not ASCII: rejected (`encoding`), the rest text."""
    binary = [name for name in raw.column_names if pa.types.is_binary(raw[name].type)]
    if not binary or not raw.num_rows:
        return raw.cast(pa.schema([(f.name, _text(f.type)) for f in raw.schema]))
    ascii_only = np.ones(raw.num_rows, dtype=bool)
    for name in binary:
        at = 0
        for chunk in raw[name].chunks:
            ascii_only[at : at + len(chunk)] &= _ascii_rows(chunk)
            at += len(chunk)
    bad = int((~ascii_only).sum())
    if bad:
        rejected["encoding"] += bad
        raw = raw.filter(pa.array(ascii_only))
    return raw.cast(pa.schema([(f.name, _text(f.type)) for f in raw.schema]))


def _text(kind: pa.DataType) -> pa.DataType:
    return pa.string() if pa.types.is_binary(kind) else kind


def _ascii_rows(chunk: pa.BinaryArray) -> np.ndarray:
    """Per value: whether its bytes are all ASCII (from the array's buffers, no copy)."""
    _, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        chunk.offset : chunk.offset + len(chunk) + 1
    ]
    if data_buffer is None or offsets[-1] == offsets[0]:
        return np.ones(len(chunk), dtype=bool)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    high = np.concatenate(([0], np.cumsum(data >= 0x80, dtype=np.int64)))
    relative = offsets - offsets[0]
    return (high[relative[1:]] - high[relative[:-1]]) == 0


def _drop_out_of_range(rows: pa.Table, table: Table, rejected: Counter) -> pa.Table:
    """Prices, quantities, ids and counts that are not finite (`not_finite`: `1e999` reads
    as inf, as `inf` does) or are below zero (`negative`): rejected."""
    for name in table.measures:
        rows = _keep_where(rows, name, "not_finite", rejected)
        if name not in table.signed:
            rows = _keep_where(rows, name, "negative", rejected)
    return rows


def _keep_where(rows: pa.Table, name: str, reason: str, rejected: Counter) -> pa.Table:
    column = rows[name]
    if reason == "not_finite":
        if not pa.types.is_floating(column.type):
            return rows
        return _keep(rows, pc.is_finite(column), reason, rejected)
    return _keep(rows, pc.greater_equal(column, pa.scalar(0, column.type)), reason, rejected)


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
