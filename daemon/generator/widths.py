"""How wide a table's row can be, column by column: what a part's memory is estimated from.

Every width is a bound from the spec alone (no value is generated): a fixed width for
numbers, dates, timestamps and booleans, and for a string column the most UTF-8 bytes one
of its values can take (the longest choice, word, domain; a pattern's widest characters),
plus Arrow's offset. Checked at submit, in bfd, so only the standard library and the
bundled data are read here.
"""

from collections.abc import Callable
from functools import cache

from bulkforge.daemon.generator import locale
from bulkforge.daemon.generator import spec as s
from bulkforge.proto.units import size_text

# An Arrow string's offset per value; the validity bit of a null is not worth counting.
OFFSET = 4
# In-memory bytes of a fixed-width value.
FIXED = {
    s.Sequence: 8,
    s.Integers: 8,
    s.Floats: 8,
    s.Boolean: 1,
    s.DateRange: 4,
    s.TimestampRange: 8,
}
# Characters of a number, date, time or boolean written as text (an email spells it out).
AS_TEXT = {
    s.Sequence: 20,
    s.Integers: 20,
    s.Floats: 24,
    s.Boolean: 5,
    s.DateRange: 10,
    s.TimestampRange: 28,
}

# What a time of day's text may add to the value the spec wrote (08:00 is written 08:00:00).
TIME_AS_TEXT = 3


def _time_text(column: s.Choice | s.Cycle) -> int:
    return TIME_AS_TEXT if column.type == "time" else 0


def columns(spec: s.Spec, counts: dict[str, int], table: str) -> dict[str, int]:
    """Each column's in-memory bytes per row, in the table's order."""
    found = {}
    for name in spec.tables[table].schema_columns():
        text = text_bytes(spec, counts, table, name)
        found[name] = OFFSET + text if text is not None else _fixed(spec, table, name)
    return found


def utf8(text: str) -> int:
    return len(text.encode())


def text_bytes(
    spec: s.Spec, counts: dict[str, int], table: str, name: str, measure: Callable = utf8
) -> int | None:
    """The most UTF-8 bytes (or, with measure=len, characters) a value of a string column
    takes; None: not a string column."""
    column = spec.tables[table].schema_columns()[name]
    if isinstance(column, s.Choice | s.Cycle) and column.type == "time":
        return None  # a TIME: seconds in memory, HH:MM:SS as text
    if isinstance(column, s.Choice | s.Cycle):
        texts = [value for value in column.values if isinstance(value, str)]
        return max(map(measure, texts)) if texts else None
    if isinstance(column, s.Words):
        return _longest(column.kind, measure)
    if isinstance(column, s.FullName):
        return _composed(column.kind, measure)
    if isinstance(column, s.Pattern):
        positions = s.parse_pattern(column.pattern)
        return sum(max(map(measure, chars)) for chars in positions)
    if isinstance(column, s.Email):
        first = _spelled(spec, counts, table, column.first, measure)
        last = _spelled(spec, counts, table, column.last, measure)
        number = len(str(counts.get(table, s.INT64_MAX)))
        return first + last + len(".@") + number + max(map(measure, column.domains))
    parent = _parent(spec, table, column)
    if parent is not None:
        return text_bytes(spec, counts, *parent, measure)
    return None


def _fixed(spec: s.Spec, table: str, name: str) -> int:
    column = spec.tables[table].schema_columns()[name]
    parent = _parent(spec, table, column)
    if parent is not None:
        return _fixed(spec, *parent)
    if isinstance(column, s.Choice | s.Cycle):
        return 1 if isinstance(column.values[0], bool) else 8
    return FIXED[type(column)]


def _parent(spec: s.Spec, table: str, column: s.Column) -> tuple[str, str] | None:
    """(table, column) whose values a key or a lookup copies."""
    if isinstance(column, s.ForeignKey):
        return column.table, column.column
    if isinstance(column, s.Lookup):
        via = spec.tables[table].columns[column.via]
        return via.table, column.column
    return None


def _spelled(spec: s.Spec, counts: dict[str, int], table: str, name: str, measure) -> int:
    """Bytes of a column as an email spells it (lowercased; "x" for a null)."""
    column = spec.tables[table].schema_columns()[name]
    text = text_bytes(spec, counts, table, name, measure)
    if text is not None:
        return max(text, 1)
    while (parent := _parent(spec, table, column)) is not None:
        table, name = parent
        column = spec.tables[table].schema_columns()[name]
    if isinstance(column, s.Choice | s.Cycle):
        return max(measure(str(value).lower()) for value in column.values) + _time_text(column)
    return AS_TEXT[type(column)]


@cache
def _longest(kind: str, measure: Callable) -> int:
    return max(map(measure, locale.words_of(kind)))


def _composed(kind: str, measure: Callable) -> int:
    if kind == "full_name":
        return _longest("first_name", measure) + 1 + _longest("last_name", measure)
    if kind == "address":
        street = _longest("street", measure) + 1 + _longest("street_suffixes", measure)
        return len(str(locale.STREET_NUMBERS)) + 1 + street
    return max(map(measure, locale.phone_formats()))


# -- a part's memory -------------------------------------------------------------------------

# Measured (tests/test_generate_output.py: one part made in a fresh process, its peak RSS
# over its start):
# making the columns holds each value about twice (the values and their draws) plus a few
# int64 arrays per column; a pattern holds an index array per varying position; a text
# format holds the text again (each column's, the rows', the part's bytes). The
# estimate stays above every measured peak (1.2x to 3x above it).
PER_COLUMN = 16
PER_PATTERN_POSITION = 16
DERIVED_ROW = 128
PER_TEXT_ROW = 128
# A derived table's index, held by every worker making any part of the job: its seats per
# group of courses (about 2 bytes a course), and the blocks it is summed in.
INDEX_PER_COURSE = 2
INDEX_BLOCKS = 64 * 1024**2
# Arrow's string arrays (32-bit offsets) hold at most this much text.
MAX_TEXT_PART = 2**31 - 1


def job_memory(spec: s.Spec, counts: dict[str, int]) -> int:
    """Bytes a worker holds for the job whatever part it makes: derived tables' indexes."""
    derived = [table.enrollments for table in spec.tables.values() if table.enrollments]
    return sum(INDEX_PER_COURSE * counts[e.courses] + INDEX_BLOCKS for e in derived)


def row_memory(spec: s.Spec, counts: dict[str, int], table: str, fmt: str) -> int:
    """Bytes a part of this table is estimated to hold per row while it is made and rendered."""
    widths = columns(spec, counts, table)
    memory = sum(2 * width + PER_COLUMN for width in widths.values())
    for column in spec.tables[table].columns.values():
        if isinstance(column, s.Pattern):
            varying = [chars for chars in s.parse_pattern(column.pattern) if len(chars) > 1]
            memory += PER_PATTERN_POSITION * len(varying)
    if spec.tables[table].enrollments:
        memory += DERIVED_ROW  # locating each seat: a few int64 arrays per row
    if fmt in ("parquet", "csv"):
        return memory + sum(widths.values())
    text = sum(_as_text(spec, counts, table, name) + len(name) + 4 for name in widths)
    return memory + 3 * text + PER_TEXT_ROW


def _as_text(spec: s.Spec, counts: dict[str, int], table: str, name: str) -> int:
    text = text_bytes(spec, counts, table, name)
    if text is not None:
        return text + 2  # its quotes
    column = spec.tables[table].schema_columns()[name]
    while (parent := _parent(spec, table, column)) is not None:
        table, name = parent
        column = spec.tables[table].schema_columns()[name]
    if isinstance(column, s.Choice | s.Cycle):
        return max(len(str(value)) for value in column.values) + _time_text(column)
    return AS_TEXT[type(column)]


def check_part_memory(
    spec: s.Spec, counts: dict[str, int], fmt: str, chunk_rows: int, bound: int, why: str
) -> None:
    """Refuse a job one of whose parts is estimated to need more than `bound` bytes.

    counts are the tables' rows as the spec gives them: a derived table's rows, not known
    before its index is built, are taken as at least a part's. Parts are never cut smaller
    behind the user's back (--chunk-rows is part of the job's spec, and the files' names
    follow from it): the refusal names the table, its columns' widths and the --chunk-rows
    that would fit.
    """
    rows = {table: min(chunk_rows, counts.get(table, chunk_rows)) for table in spec.tables}
    if fmt in ("jsonl", "sql"):
        _check_text_part(spec, counts, rows)
    per_row = {table: row_memory(spec, counts, table, fmt) for table in spec.tables}
    base = job_memory(spec, counts)
    table = max(per_row, key=lambda name: per_row[name] * rows[name])
    needed = base + per_row[table] * rows[table]
    if needed <= bound:
        return
    shown = ", ".join(f"{name} {width}" for name, width in columns(spec, counts, table).items())
    fits = (bound - base) // max(per_row.values())
    advice = (
        f"give chunk_rows {_round_down(fits):,} or fewer"
        if fits >= 1
        else "not even one row fits: raise the memory cap or lower the CPU workers"
    )
    held = f" and {size_text(base)} of derived tables' index" if base else ""
    raise ValueError(
        f"a part of {table} ({rows[table]:,} rows x ~{size_text(per_row[table])} a row in memory"
        f"{held}; column widths: {shown}) is estimated at {size_text(needed)}, over the "
        f"{size_text(bound)} one task may use ({why}); {advice}"
    )


def _check_text_part(spec: s.Spec, counts: dict[str, int], rows: dict[str, int]) -> None:
    """A JSON Lines or SQL part is built as one Arrow string array: at most 2 GiB of text."""
    for table, count in rows.items():
        widths = columns(spec, counts, table)
        per_row = sum(_as_text(spec, counts, table, name) + len(name) + 4 for name in widths)
        if per_row * count > MAX_TEXT_PART:
            raise ValueError(
                f"a part of {table} ({count:,} rows x up to {size_text(per_row)} of text) may "
                f"pass the {size_text(MAX_TEXT_PART)} one text part can hold; give chunk_rows "
                f"{_round_down(MAX_TEXT_PART // per_row):,} or fewer"
            )


def _round_down(rows: int) -> int:
    """rows to two significant digits, down: a --chunk-rows a person would type."""
    step = 10 ** max(0, len(str(rows)) - 2)
    return rows // step * step


def least_output(spec: s.Spec, counts: dict[str, int], fmt: str) -> int:
    """Bytes a text format's output takes at the least, whatever its values: a row's
    separators, and in JSON Lines its keys (0 for Parquet, whose compression has no floor)."""
    least = 0
    for table, rows in counts.items():
        names = list(spec.tables[table].schema_columns())
        if fmt == "csv":  # a comma between values, a newline after them
            per_row = len(names)
        elif fmt == "jsonl":  # {"name":value,...}\n
            per_row = sum(len(name) + 3 for name in names) + len(names) - 1 + 3
        elif fmt == "sql":  # (value, ...),\n
            per_row = 2 * len(names) + 2
        else:
            return 0
        least += per_row * rows
    return least
