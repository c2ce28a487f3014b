"""Column values as a function of (seed, table, column, row number), vectorised.

`Dataset(spec, counts, seed).table(name).rows(start, count)` is one chunk of a table
as an Arrow table; any chunk can be made alone, in any order, by any process, and
the same rows always come out the same. Each column draws from streams of its own
(streams.py), so adding a column changes no other; a foreign key draws its parent
row per child and reads the parent's column there, so every key resolves.
"""

from datetime import UTC, date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bulkforge.daemon.generator import locale, streams
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.enrollments import EnrollmentValues
from bulkforge.daemon.generator.text import decimal, join

EPOCH = date(1970, 1, 1)


class Dataset:
    """Every table of a spec at its row counts, for one seed."""

    def __init__(self, spec: s.Spec, counts: dict[str, int], seed: int):
        self.spec = spec
        self.counts = dict(counts)
        self.seed = seed
        self._tables: dict = {}
        for name in spec.order():  # a derived table's rows follow from its parents
            if spec.tables[name].enrollments:
                self.counts[name] = self.table(name).count

    def table(self, name: str) -> "TableValues | EnrollmentValues":
        if name not in self._tables:
            derived = self.spec.tables[name].enrollments is not None
            self._tables[name] = (EnrollmentValues if derived else TableValues)(self, name)
        return self._tables[name]

    def rows(self, name: str, start: int, count: int) -> pa.Table:
        """Rows [start, start + count) of a table, shaped as every format writes them."""
        return self.shaped(name, self.table(name).rows(start, count))

    def shaped(self, name: str, values: "dict[str, pa.Array] | pa.Table") -> pa.Table:
        """A chunk as every format writes it: columns in the schema's order (the key first),
        and a column that is never null marked so (Parquet's required fields)."""
        fields, arrays = [], []
        for column in self.spec.tables[name].schema_columns():
            array = values[column]
            fields.append(pa.field(column, array.type, self.spec.nullable(name, column)))
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class TableValues:
    def __init__(self, dataset: Dataset, name: str):
        self.dataset = dataset
        self.name = name
        self.spec = dataset.spec.tables[name]
        self.count = dataset.counts[name]

    def rows(self, start: int, count: int) -> pa.Table:
        """Rows [start, start + count) with every column, the key first, then the spec's order."""
        rows = np.arange(start, start + count, dtype=np.int64)
        values = {name: self.column(name, rows) for name in self.spec.columns}
        return self.dataset.shaped(self.name, values)

    def key(self, column: str, *purpose: str) -> int:
        return streams.stream_key(self.dataset.seed, self.name, column, *purpose)

    def column(self, name: str, rows: np.ndarray) -> pa.Array:
        """The column's values at the given row numbers (any order, repeats allowed)."""
        column = self.spec.columns[name]
        values = _MAKERS[type(column)](self, name, column, rows)
        if column.null:
            values = self.with_nulls(name, column.null, rows, values)
        if isinstance(column, s.Lookup) and (via := self.spec.columns[column.via]).null:
            # A row whose key is null has no parent: nothing to look up (as a LEFT JOIN).
            values = self.with_nulls(column.via, via.null, rows, values)
        return values

    def with_nulls(self, name: str, share: float, rows: np.ndarray, values: pa.Array):
        """values, null at the rows where column `name` draws a null."""
        nulls = streams.uniform(self.key(name, "null"), rows) < share
        return pc.if_else(pa.array(nulls), pa.scalar(None, values.type), values)

    def parent_rows(self, name: str, column: s.ForeignKey, rows: np.ndarray) -> np.ndarray:
        """The parent row each child row points to."""
        parents = self.dataset.counts[column.table]
        key = self.key(name, "parent")
        if column.unique:  # one to one: the spec checks there are no more rows than parents
            return streams.permute(key, rows, parents)
        if column.unique_per:
            return self._in_turns(key, self.spec.columns[column.unique_per], rows, parents)
        if column.distribution == "uniform":
            return streams.below(key, rows, parents)
        return _power_law(streams.uniform(key, rows), parents, column.a)

    def _in_turns(self, key: int, per: s.Cycle, rows: np.ndarray, parents: int) -> np.ndarray:
        """Distinct parents for the rows that share a value of the cycle `per`.

        Row r holds value v = (r // repeat) % values and is the k-th row of it. It takes
        parent permute((k + v * most) mod parents), `most` the most rows any value has
        (at most `parents`: the spec checks): within one value the k differ, so the parents
        do; each value starts where the one before could end, so every parent gets its
        turn about equally often. A function of r alone, like every column.
        """
        turn, within = np.divmod(rows, per.repeat)
        laps, value = np.divmod(turn, len(per.values))
        k = laps * per.repeat + within
        most = per.most_per_value(self.count)
        return streams.permute(key, (k + value * most) % parents, parents)


def _sequence(table: TableValues, name: str, column: s.Sequence, rows: np.ndarray) -> pa.Array:
    return pa.array(column.start + rows * column.step, type=pa.int64())


def _distributed(table: TableValues, name: str, column, rows: np.ndarray) -> np.ndarray:
    """Floats in [min, max] drawn by the column's distribution: finite whatever the bounds."""
    key = table.key(name)
    low, high = float(column.min), float(column.max)
    with np.errstate(over="ignore"):  # a far tail overflows to inf; the clip brings it back
        if column.distribution == "uniform":
            u = streams.uniform(key, rows)
            # Not low + u * (high - low): high - low overflows for bounds like +-1e308.
            values = low * (1.0 - u) + high * u
        elif column.distribution == "zipf":
            span = int(high - low) + 1  # at most 2^53 + 1: the spec refuses wider
            values = low + _power_law(streams.uniform(key, rows), span, column.a)
        else:
            z = column.mean + column.sd * streams.normal(key, rows)
            values = np.exp(z) if column.distribution == "lognormal" else z
    return np.clip(values, low, high)


def _integers(table: TableValues, name: str, column: s.Integers, rows: np.ndarray) -> pa.Array:
    if column.unique:
        values = column.min + streams.permute(table.key(name), rows, column.distinct())
    elif column.distribution == "uniform":
        values = column.min + streams.below(table.key(name), rows, column.distinct())
    elif column.distribution == "zipf":
        # Ranks counted exactly in integers: min + rank <= max, the span within 2^62.
        ranks = _power_law(streams.uniform(table.key(name), rows), column.distinct(), column.a)
        values = np.int64(column.min) + ranks
    else:
        values = _to_int64(np.rint(_distributed(table, name, column, rows)), column)
    if column.at_most:
        values = np.minimum(values, _bound(table, column.at_most, rows))
    return pa.array(values, type=pa.int64())


def _bound(table: TableValues, at_most: s.ParentColumn, rows: np.ndarray) -> np.ndarray:
    """The parent row's integer column, for the parent the key `via` chose (never null)."""
    via = table.spec.columns[at_most.via]
    parents = table.parent_rows(at_most.via, via, rows)
    bound = _at_parents(table.dataset.table(via.table), at_most.column, parents)
    return bound.to_numpy(zero_copy_only=False).astype(np.int64)


def _to_int64(values: np.ndarray, column: s.Integers) -> np.ndarray:
    """Whole floats within [min, max] as int64: float(max) may round past 2^63 - 1, and
    float(min) below min, so both ends are clamped again as integers."""
    top = values >= 2.0**63
    as_int = np.where(top, 0.0, values).astype(np.int64)
    as_int[top] = column.max
    return np.clip(as_int, column.min, column.max)


def _floats(table: TableValues, name: str, column: s.Floats, rows: np.ndarray) -> pa.Array:
    values = _distributed(table, name, column, rows)
    if column.digits is not None:
        # Only where a float has fractional digits (below 2^52): rounding multiplies by
        # 10^digits, which overflows for values near the largest float.
        small = np.abs(values) < s.ROUNDED_BELOW
        values[small] = np.round(values[small], column.digits)
        low, high = column.rounded_bounds()  # rounding may step past min or max
        values = np.clip(values, low, high)
    return pa.array(values, type=pa.float64())


def _choice(table: TableValues, name: str, column: s.Choice, rows: np.ndarray) -> pa.Array:
    options = _options(column)
    return options.take(_indices(table, name, column, rows, len(column.values), column.weights))


def _cycle(table: TableValues, name: str, column: s.Cycle, rows: np.ndarray) -> pa.Array:
    return _options(column).take((rows // column.repeat) % len(column.values))


def _options(column: s.Choice | s.Cycle) -> pa.Array:
    """A choice's or a cycle's values as Arrow: times of day as TIME (seconds)."""
    if column.type == "time":
        seconds = [s.seconds_of_day(value) for value in column.values]
        return pa.array(seconds, type=pa.int32()).cast(pa.time32("s"))
    return pa.array(column.values)


def _boolean(table: TableValues, name: str, column: s.Boolean, rows: np.ndarray) -> pa.Array:
    return pa.array(streams.uniform(table.key(name), rows) < column.p)


def _date(table: TableValues, name: str, column: s.DateRange, rows: np.ndarray) -> pa.Array:
    days = _indices(table, name, column, rows, column.distinct())
    return pa.array(days + (column.start - EPOCH).days, type=pa.int32()).cast(pa.date32())


def _timestamp(
    table: TableValues, name: str, column: s.TimestampRange, rows: np.ndarray
) -> pa.Array:
    seconds = _indices(table, name, column, rows, column.distinct())
    start = column.start if column.start.tzinfo else column.start.replace(tzinfo=UTC)
    micros = (int(start.timestamp()) + seconds) * 1_000_000  # whole seconds: the spec says so
    return pa.array(micros, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _words(table: TableValues, name: str, column: s.Words, rows: np.ndarray) -> pa.Array:
    return locale.words(column.kind).take(
        _indices(table, name, column, rows, locale.size(column.kind))
    )


def _composed(table: TableValues, name: str, column: s.FullName, rows: np.ndarray) -> pa.Array:
    """Full names, addresses and phone numbers: one index over all their combinations."""
    index = _indices(table, name, column, rows, column.distinct())
    if column.kind == "full_name":
        last = locale.size("last_name")
        return join([locale.words("first_name").take(index // last), " ",
                      locale.words("last_name").take(index % last)])  # fmt: skip
    if column.kind == "address":
        streets, suffixes = locale.size("street"), locale.size("street_suffixes")
        number, rest = np.divmod(index, streets * suffixes)
        return join([decimal(number + 1), " ",
                      locale.words("street").take(rest // suffixes), " ",
                      locale.words("street_suffixes").take(rest % suffixes)])  # fmt: skip
    formats = locale.phone_formats()
    digits = formats[0].count("#")
    form, number = np.divmod(index, 10**digits)
    prefix = pa.array([f.split("#", 1)[0] for f in formats]).take(form)
    text = pc.utf8_lpad(decimal(number), width=digits, padding="0")
    return join([prefix, pc.utf8_slice_codeunits(text, 0, 3), "-",
                  pc.utf8_slice_codeunits(text, 3, digits)])  # fmt: skip


def _email(table: TableValues, name: str, column: s.Email, rows: np.ndarray) -> pa.Array:
    """first.last{n}@domain, lowercased, n the row's number: unique whatever the names."""
    parts = [_for_email(table, source, rows) for source in (column.first, column.last)]
    domain = pa.array(column.domains).take(
        streams.below(table.key(name, "domain"), rows, len(column.domains))
    )
    number = decimal(rows + 1)
    return join([parts[0], ".", parts[1], number, "@", domain])


def _for_email(table: TableValues, name: str, rows: np.ndarray) -> pa.Array:
    """A column as an email spells it: lowercase letters only ("x" for a null). No digits:
    the row number follows the last name, and a last name ending in digits ("ab1" + "2",
    "ab" + "12") could repeat an email of another row."""
    source = table.spec.columns[name]
    if isinstance(source, s.Words) and not source.null:
        # The same draws as the column, from the word list cleaned once.
        return locale.for_email(source.kind).take(
            _indices(table, name, source, rows, locale.size(source.kind))
        )
    text = pc.utf8_lower(pc.cast(table.column(name, rows), pa.string()))
    return pc.replace_substring_regex(pc.fill_null(text, "x"), r"[^a-z]", "")


def _pattern(table: TableValues, name: str, column: s.Pattern, rows: np.ndarray) -> pa.Array:
    positions = s.parse_pattern(column.pattern)
    choices: dict[int, np.ndarray] = {}
    varying = [at for at, chars in enumerate(positions) if len(chars) > 1]
    if not varying:  # literals only: one value, repeated (a join of scalars is a scalar)
        return pa.repeat(pa.scalar("".join(positions), pa.string()), len(rows))
    if column.unique:
        # One index over every combination, read as a mixed-radix number, last place first.
        index = streams.permute(table.key(name), rows, min(column.distinct(), 2**62))
        for at in reversed(varying):
            index, choices[at] = np.divmod(index, len(positions[at]))
    else:
        for slot, at in enumerate(varying):
            key = table.key(name, str(slot))
            choices[at] = streams.below(key, rows, len(positions[at]))
    return join(
        [
            pa.array(list(chars)).take(choices[at]) if at in choices else chars
            for at, chars in enumerate(positions)
        ]
    )


def _foreign_key(table: TableValues, name: str, column: s.ForeignKey, rows: np.ndarray):
    parents = table.parent_rows(name, column, rows)
    return _at_parents(table.dataset.table(column.table), column.column, parents)


def _lookup(table: TableValues, name: str, column: s.Lookup, rows: np.ndarray) -> pa.Array:
    via = table.spec.columns[column.via]
    parents = table.parent_rows(column.via, via, rows)
    return _at_parents(table.dataset.table(via.table), column.column, parents)


def _at_parents(parent: TableValues, column: str, rows: np.ndarray) -> pa.Array:
    """A parent's column at many child rows: each distinct parent row is made once."""
    distinct, where = np.unique(rows, return_inverse=True)
    if len(distinct) > len(rows) // 2:
        return parent.column(column, rows)
    return parent.column(column, distinct).take(where)


def _indices(
    table: TableValues,
    name: str,
    column: s.Column,
    rows: np.ndarray,
    n: int,
    weights: list[float] | None = None,
) -> np.ndarray:
    """An index in [0, n) per row: a permutation when unique, weighted when weights are given."""
    if column.unique:
        return streams.permute(table.key(name), rows, n)
    if weights is None:
        return streams.below(table.key(name), rows, n)
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    drawn = streams.uniform(table.key(name), rows) * cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, drawn, side="right"), n - 1)


def _power_law(u: np.ndarray, n: int, a: float) -> np.ndarray:
    """Ranks 0..n-1 from uniforms, P(rank k) falling as (k+1)^-a (a bounded zipf)."""
    if abs(a - 1.0) < 1e-9:
        ranks = np.exp(u * np.log(n + 1.0)) - 1.0
    else:
        top = (n + 1.0) ** (1.0 - a)
        ranks = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - a)) - 1.0
    # Clipped as floats first (a rank past 2^63 would not convert), then as integers:
    # float(n - 1) may round up to n.
    ranks = np.clip(ranks, 0.0, float(n - 1)).astype(np.int64)
    return np.minimum(ranks, n - 1)


_MAKERS = {
    s.Sequence: _sequence,
    s.Integers: _integers,
    s.Floats: _floats,
    s.Choice: _choice,
    s.Cycle: _cycle,
    s.Boolean: _boolean,
    s.DateRange: _date,
    s.TimestampRange: _timestamp,
    s.Words: _words,
    s.FullName: _composed,
    s.Email: _email,
    s.Pattern: _pattern,
    s.ForeignKey: _foreign_key,
    s.Lookup: _lookup,
}
