"""A generation spec: tables, their row counts, and a generator for each column.

Given as TOML, JSON or YAML; validated here, at submit, so that whatever is wrong is
refused with the table and column named and nothing is written:

    [tables.students]
    scale = 1.0                       # times --rows (or `rows = N`)
    [tables.students.columns]
    student_id = { kind = "sequence" }
    first_name = { kind = "first_name" }
    email      = { kind = "email", first = "first_name", last = "last_name", unique = true }
    gpa        = { kind = "float", min = 0, max = 4, distribution = "normal", sd = 0.5 }
    department = { kind = "foreign_key", table = "departments", column = "department_id" }

Refused: an unknown generator, a foreign key to a missing table or column, a cycle of
foreign keys, a unique column with fewer distinct values than rows, zero or negative rows.
Every option given is honoured or refused, never ignored: `unique` where the generator
cannot keep it (a float, a boolean, a cycle that repeats, a weighted choice, a skewed
draw), a distribution's parameter given with a distribution that does not use it.
"""

import json
import math
import re
import tomllib
import unicodedata
from datetime import date, datetime
from graphlib import CycleError, TopologicalSorter
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import locale
from bulkforge.daemon.validation import describe
from bulkforge.proto.text import did_you_mean, json_problem, one_line
from bulkforge.proto.units import MAX_ROWS

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
# Integer columns are Arrow int64: their bounds, and a span a uniform draw can scale to.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
MAX_INTEGER_SPAN = 2**62
# A zipf float column draws whole steps from min: at most this many (a float's exact integers).
MAX_ZIPF_FLOAT_SPAN = 2**53
# A pattern's characters, a count's largest value, and the characters one class may hold.
MAX_PATTERN_CHARS = 200
MAX_CLASS_CHARS = 4096
# Characters no option that becomes output may hold: control characters (C0, DEL, C1),
# lone surrogates (not UTF-8) and line or paragraph separators (a line break to readers).
UNPRINTABLE = {"Cc", "Cs", "Zl", "Zp"}
# A host name, as an email's domain must be one.
_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# Every number of a spec is finite: an inf or nan bound would reach the output as one.
FINITE = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def unprintable(text: str) -> str | None:
    """The first character of text no output may hold, as U+XXXX, or None."""
    for char in text:
        if unicodedata.category(char) in UNPRINTABLE:
            return f"U+{ord(char):04X}"
    return None


def check_text(values, what: str) -> None:
    """Refuse control characters, surrogates and line separators in strings that become output."""
    for value in values:
        if isinstance(value, str) and (found := unprintable(value)):
            raise ValueError(f"{what} must not hold control characters ({found} in {value!r:.40})")


def check_int64(values, what: str) -> None:
    for value in values:
        plain_int = isinstance(value, int) and not isinstance(value, bool)
        if plain_int and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{what}: {value} is not a 64-bit integer")


def check_weights(weights: list[float], what: str) -> None:
    if any(w < 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"{what} must be positive")
    if not math.isfinite(sum(weights)):  # the draw sums them: inf would skew it
        raise ValueError(f"{what} add up past the largest float")


class Reference(BaseModel):
    """A column of another table whose values a column's values are (a foreign key in SQL)."""

    model_config = FINITE

    table: str
    column: str


class Column(BaseModel):
    model_config = FINITE

    # The share of rows that are null, drawn per row.
    null: float = Field(default=0.0, ge=0.0, lt=1.0)
    unique: bool = False
    # The table's key in SQL output: unique and never null.
    primary_key: bool = False
    # Values that are another table's keys (a cycle of slot numbers): declared a foreign key.
    references: Reference | None = None

    @model_validator(mode="after")
    def _key(self) -> "Column":
        if self.primary_key and self.null:
            raise ValueError("a primary key cannot be null")
        if self.primary_key and not (self.unique or isinstance(self, Sequence)):
            raise ValueError("a primary key must be a sequence or unique")
        return self

    def distinct(self) -> int | None:
        """How many distinct values it can take (None: unbounded)."""
        return None

    def parents(self) -> list[tuple[str, str]]:
        """(table, column) it reads from another table."""
        return []

    def siblings(self) -> list[str]:
        """Columns of its own table it is derived from."""
        return []


class Sequence(Column):
    kind: Literal["sequence"]
    start: Int64 = 1
    step: Int64 = 1

    def fits(self, rows: int) -> bool:
        """Its last value is an int64 too (Arrow would wrap it around silently)."""
        return INT64_MIN <= self.start + self.step * (rows - 1) <= INT64_MAX

    @model_validator(mode="after")
    def _moves(self) -> "Sequence":
        if self.step == 0:
            raise ValueError("step must not be 0")
        return self


# The parameters each distribution reads: one given with a distribution that does not read
# it is refused (it would be ignored, and the output not what the spec says).
DISTRIBUTION_PARAMETERS = {
    "uniform": set(),
    "normal": {"mean", "sd"},
    "lognormal": {"mean", "sd"},
    "zipf": {"a"},
}


def check_parameters(column: "Column", info: ValidationInfo) -> None:
    """Refuse mean, sd or a given with a distribution that does not use them. A spec restored
    from the store carries every default (model_dump): it was checked at submit."""
    if info.context and info.context.get("stored"):
        return
    given = column.model_fields_set & {"mean", "sd", "a"}
    unused = sorted(given - DISTRIBUTION_PARAMETERS[column.distribution])
    if not unused:
        return
    offered = get_args(type(column).model_fields["distribution"].annotation)
    using = [f'"{d}"' for d in offered if set(unused) <= DISTRIBUTION_PARAMETERS[d]]
    names, them = " and ".join(unused), "them" if len(unused) > 1 else "it"
    raise ValueError(
        f"{names} {'are' if len(unused) > 1 else 'is'} not used by the {column.distribution} "
        f"distribution: give distribution = {' or '.join(using)} with {them}, or leave {them} out"
    )


class Distributed(Column):
    distribution: Literal["uniform", "normal", "lognormal", "zipf"] = "uniform"
    # normal: mean, sd; lognormal: mean and sd of the log; zipf: exponent a (> 0).
    mean: float = 0.0
    sd: float = Field(default=1.0, gt=0)
    a: float = Field(default=1.2, gt=0)

    @model_validator(mode="after")
    def _parameters(self, info: ValidationInfo) -> "Distributed":
        check_parameters(self, info)
        return self


class ParentColumn(BaseModel):
    """A column of the row that a foreign key of this table (`via`) points to."""

    model_config = FINITE

    via: str
    column: str


class Integers(Distributed):
    kind: Literal["integer"]
    min: Int64
    max: Int64
    # Capped at the parent row's integer column (a course's capacity at its room's seats).
    at_most: ParentColumn | None = None

    def siblings(self) -> list[str]:
        return [self.at_most.via] if self.at_most else []

    def distinct(self) -> int | None:
        return self.max - self.min + 1

    @model_validator(mode="after")
    def _range(self) -> "Integers":
        if self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")
        if self.max - self.min >= MAX_INTEGER_SPAN:
            raise ValueError(f"min to max spans more than 2^62 values ({self.min}..{self.max})")
        if self.unique and self.distribution != "uniform":
            raise ValueError("a unique integer column must be uniform")
        if self.unique and self.at_most:
            raise ValueError("a unique integer column cannot be capped by at_most")
        return self


class Floats(Distributed):
    kind: Literal["float"]
    min: float
    max: float
    digits: int | None = Field(default=None, ge=0, le=12)

    @model_validator(mode="after")
    def _range(self) -> "Floats":
        if not self.max > self.min:
            raise ValueError(f"max {self.max} must be above min {self.min}")
        if self.unique:
            raise ValueError("a float column cannot be unique")
        span = self.max - self.min  # inf when the bounds are far apart: refused for zipf
        if self.distribution == "zipf" and not span <= MAX_ZIPF_FLOAT_SPAN:
            raise ValueError(
                f"zipf draws whole steps from min: max - min must be at most 2^53 "
                f"({self.min}..{self.max})"
            )
        if self.digits is not None and self.rounded_bounds() is None:
            raise ValueError(
                f"no value of {self.digits} digits lies between min {self.min} and max {self.max}"
            )
        return self

    def rounded_bounds(self) -> tuple[float, float] | None:
        """The least and the greatest value of `digits` digits within [min, max], or None."""
        low, high = round_to(self.min, self.digits), round_to(self.max, self.digits)
        step = 10.0 ** -(self.digits or 0)
        if low < self.min:
            low = round_to(self.min + step, self.digits)
        if high > self.max:
            high = round_to(self.max - step, self.digits)
        if not self.min <= low <= high <= self.max:
            return None
        return low, high


# Floats this large are whole numbers already: rounding them to digits leaves them as they are
# (and multiplying them by 10^digits, as rounding does, would overflow).
ROUNDED_BELOW = 2.0**52


def round_to(value: float, digits: int | None) -> float:
    if digits is None or abs(value) >= ROUNDED_BELOW:
        return value
    import numpy as np  # the spec is checked in bfd, which imports numpy only to generate

    return float(np.round(value, digits))


# A time of day as a spec writes it: HH:MM or HH:MM:SS.
_TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")


def seconds_of_day(text: str) -> int:
    """08:30 or 08:30:15 as seconds since midnight (the value of a TIME column)."""
    hours, minutes, seconds = _TIME_OF_DAY.match(text).groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)


def check_times(values, type_: str | None) -> None:
    """Values of a column typed `time` are times of day, written HH:MM or HH:MM:SS."""
    if type_ != "time":
        return
    for value in values:
        if not isinstance(value, str) or not _TIME_OF_DAY.match(value):
            raise ValueError(f"type time: {value!r:.40} is not a time of day (HH:MM or HH:MM:SS)")


def value_key(value, type_: str | None):
    """A value as the output compares it: a time of day by its seconds (08:00 is 08:00:00)."""
    return seconds_of_day(value) if type_ == "time" else value


def distinct_values(values, type_: str | None) -> int:
    return len({value_key(value, type_) for value in values})


def check_listed_once(values, type_: str | None, what: str) -> None:
    """A unique choice or cycle takes each listed value once: one listed twice would repeat."""
    seen: dict = {}
    for value in values:
        if (key := value_key(value, type_)) in seen:
            raise ValueError(f"{what}, but it lists {value!r:.40} twice (as {seen[key]!r:.40})")
        seen[key] = value


class Choice(Column):
    kind: Literal["choice"]
    values: list[str | int | float | bool] = Field(min_length=1, max_length=100_000)
    weights: list[float] | None = None
    # The values' type in the output, when not the one their TOML gives: "time" (TIME).
    type: Literal["time"] | None = None

    def distinct(self) -> int | None:
        return distinct_values(self.values, self.type)

    @model_validator(mode="after")
    def _weights(self) -> "Choice":
        check_text(self.values, "values")
        check_int64(self.values, "values")
        check_times(self.values, self.type)
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"{len(self.weights)} weights for {len(self.values)} values")
            check_weights(self.weights, "weights")
        if len({type(v) for v in self.values}) > 1:
            raise ValueError("values must all be of one type")
        if self.unique and self.weights is not None:
            raise ValueError("a unique choice takes no weights")
        if self.unique:
            check_listed_once(self.values, self.type, "a unique choice")
        return self


class Cycle(Column):
    """values in turn: row r takes values[(r // repeat) % len(values)] (days, periods, slots)."""

    kind: Literal["cycle"]
    values: list[str | int] = Field(min_length=1, max_length=100_000)
    repeat: int = Field(default=1, ge=1)
    type: Literal["time"] | None = None

    def distinct(self) -> int | None:
        return distinct_values(self.values, self.type)

    def most_per_value(self, rows: int) -> int:
        """The most rows of `rows` that share one value (the first value's, when distinct)."""
        turns, rest = divmod(rows, self.repeat * len(self.values))
        return turns * self.repeat + min(rest, self.repeat)

    @model_validator(mode="after")
    def _plain(self) -> "Cycle":
        if len({type(v) for v in self.values}) > 1:
            raise ValueError("values must all be of one type")
        check_text(self.values, "values")
        check_int64(self.values, "values")
        check_times(self.values, self.type)
        if self.unique and self.repeat > 1:
            raise ValueError(
                f"a unique cycle takes repeat = 1: with repeat = {self.repeat} each value "
                "comes that many rows in a row"
            )
        if self.unique:
            check_listed_once(self.values, self.type, "a unique cycle")
        return self


class Boolean(Column):
    kind: Literal["boolean"]
    p: float = Field(default=0.5, ge=0.0, le=1.0)

    def distinct(self) -> int | None:
        return 2

    @model_validator(mode="after")
    def _not_unique(self) -> "Boolean":
        if self.unique:
            raise ValueError("a boolean column cannot be unique (it draws each row's value alone)")
        return self


class DateRange(Column):
    kind: Literal["date"]
    start: date
    end: date

    def distinct(self) -> int | None:
        return (self.end - self.start).days + 1

    @model_validator(mode="after")
    def _range(self) -> "DateRange":
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class TimestampRange(Column):
    kind: Literal["timestamp"]
    start: datetime
    end: datetime

    def distinct(self) -> int | None:
        return int((self.end - self.start).total_seconds()) + 1

    @model_validator(mode="after")
    def _range(self) -> "TimestampRange":
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise ValueError("give start and end both with a time zone, or both without")
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.start.microsecond or self.end.microsecond:
            raise ValueError("start and end are whole seconds (values are drawn by the second)")
        return self


class Words(Column):
    """Values from the bundled locale data: names, cities, streets, words."""

    kind: Literal["first_name", "last_name", "city", "street", "word"]

    def distinct(self) -> int | None:
        return locale.size(self.kind)


class FullName(Column):
    kind: Literal["full_name", "address", "phone"]

    def distinct(self) -> int | None:
        return locale.combinations(self.kind)


class Email(Column):
    """first.last{row}@example.org from two name columns of the table: unique by the row."""

    kind: Literal["email"]
    first: str
    last: str
    domains: list[str] = Field(
        default=["example.com", "example.org", "example.net"], min_length=1, max_length=10_000
    )

    def siblings(self) -> list[str]:
        return [self.first, self.last]

    @model_validator(mode="after")
    def _hosts(self) -> "Email":
        check_text(self.domains, "domains")
        for domain in self.domains:
            if not _HOST.match(domain):
                raise ValueError(
                    f"domains: {domain!r:.60} is not a host name (letters, digits, hyphens, dots)"
                )
        return self


class Pattern(Column):
    """A pattern of literals, classes ([A-Z], [a-z0-9], \\d) and counts ({3})."""

    kind: Literal["pattern"]
    pattern: str = Field(min_length=1, max_length=200)

    def distinct(self) -> int | None:
        return math.prod(len(chars) for chars in parse_pattern(self.pattern) if len(chars) > 1)

    @model_validator(mode="after")
    def _parses(self) -> "Pattern":
        check_text([self.pattern], "the pattern")
        parse_pattern(self.pattern)
        return self


class ForeignKey(Column):
    """A parent's column at a parent row drawn per child: uniform, or zipf-skewed; or, when
    unique, a permutation of the parent rows (each child its own parent, one to one)."""

    kind: Literal["foreign_key"]
    table: str
    column: str
    distribution: Literal["uniform", "zipf"] = "uniform"
    a: float = Field(default=1.2, gt=0)
    # A cycle column of this table: rows that share its value get distinct parents, and
    # the parents take turns (no classroom hosts two courses of one slot).
    unique_per: str | None = None

    def parents(self) -> list[tuple[str, str]]:
        return [(self.table, self.column)]

    def siblings(self) -> list[str]:
        return [self.unique_per] if self.unique_per else []

    @model_validator(mode="after")
    def _spread(self, info: ValidationInfo) -> "ForeignKey":
        check_parameters(self, info)
        if self.unique_per and self.distribution != "uniform":
            raise ValueError(
                f"unique_per gives the parents turns, evenly: it takes no distribution "
                f"({self.distribution!r})"
            )
        if self.unique and self.distribution != "uniform":
            raise ValueError(
                f"a unique foreign key gives each row its own parent: it takes no distribution "
                f"({self.distribution!r})"
            )
        if self.unique and self.unique_per:
            raise ValueError(
                "give unique or unique_per, not both: unique gives every row its own parent "
                "already, unique_per distinct parents only among rows that share a value"
            )
        return self


class Lookup(Column):
    """The parent row's other column, for the parent a foreign key of this table chose."""

    kind: Literal["lookup"]
    via: str  # a foreign_key column of this table
    column: str  # a column of that key's table

    def siblings(self) -> list[str]:
        return [self.via]


AnyColumn = Annotated[
    Sequence
    | Integers
    | Floats
    | Choice
    | Cycle
    | Boolean
    | DateRange
    | TimestampRange
    | Words
    | FullName
    | Email
    | Pattern
    | ForeignKey
    | Lookup,
    Field(discriminator="kind"),
]


class Enrollments(BaseModel):
    """A table of seats: students in courses, per term, as courses' capacities allow.

    Each course runs every term at its slot; a course fills a share of its capacity
    (fill_min..fill_max, per course). A student is never in two courses of one slot in
    one term, no course is over capacity, and only terms before the current one have
    grades. Its rows: enrollment_id, student_id, course_id, term, grade.
    """

    model_config = FINITE

    students: str = "students"
    student_key: str = "student_id"
    courses: str = "courses"
    course_key: str = "course_id"
    capacity: str = "capacity"
    slot: str = "slot"
    terms: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9 _-]{1,32}$")]] = Field(
        min_length=1, max_length=100
    )
    current_term: str
    fill_min: float = Field(default=0.5, gt=0, le=1)
    fill_max: float = Field(default=1.0, gt=0, le=1)
    grades: list[str] = Field(default=["A", "B", "C", "D", "F"], min_length=1, max_length=1000)
    grade_weights: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Enrollments":
        if self.current_term not in self.terms:
            raise ValueError(f"current_term {self.current_term!r} is not one of the terms")
        if len(set(self.terms)) != len(self.terms):
            raise ValueError("terms are listed twice")
        if self.fill_max < self.fill_min:
            raise ValueError("fill_max is below fill_min")
        check_text(self.grades, "grades")
        if self.grade_weights is not None:
            if len(self.grade_weights) != len(self.grades):
                raise ValueError("one weight per grade")
            check_weights(self.grade_weights, "grade_weights")
        return self

    def columns(self) -> dict[str, Column]:
        """Its columns as the SQL schema declares them (their values are its own)."""
        return {
            "enrollment_id": Sequence(kind="sequence", primary_key=True),
            "student_id": ForeignKey(
                kind="foreign_key", table=self.students, column=self.student_key
            ),
            "course_id": ForeignKey(kind="foreign_key", table=self.courses, column=self.course_key),
            "term": Choice(kind="choice", values=list(self.terms)),
            "grade": Choice(kind="choice", values=list(self.grades), null=0.5),
        }

    def check(self, spec: "Spec", where: str) -> None:
        needed = [
            (self.students, self.student_key),
            (self.courses, self.course_key),
            (self.courses, self.capacity),
            (self.courses, self.slot),
        ]
        for table, column in needed:
            if table not in spec.tables or column not in spec.tables[table].columns:
                raise ValueError(f"{where}: names a missing column {table}.{column}")
        courses = spec.tables[self.courses].columns
        if not isinstance(courses[self.capacity], Integers) or courses[self.capacity].min < 1:
            raise ValueError(f"{where}: {self.courses}.{self.capacity} must be an integer >= 1")
        slot = courses[self.slot]
        if not isinstance(slot, Cycle) or slot.repeat != 1:
            raise ValueError(f"{where}: {self.courses}.{self.slot} must be a cycle (repeat 1)")
        for table, column in needed:
            if spec.tables[table].columns[column].null:
                raise ValueError(
                    f"{where}: {table}.{column} has nulls; enrollments need a value in every row"
                )
        for table, column in needed[:2]:
            if not keeps_distinct(spec, table, column) or spec.nullable(table, column):
                raise ValueError(
                    f"{where}: {table}.{column} must be a sequence or unique, without nulls "
                    "(a seat names one student and one course)"
                )


# Columns one table-level unique key may hold, and such keys a table may declare.
MAX_KEY_COLUMNS = 16
MAX_UNIQUE_KEYS = 16
# Rows up to which a unique key of cycles alone is checked by listing its values.
MAX_CHECKED_CYCLE_ROWS = 1_000_000


class Table(BaseModel):
    model_config = FINITE

    rows: int | None = Field(default=None, ge=1, le=MAX_ROWS)
    # At most MAX_ROWS, so rows x scale stays a number; check() bounds the product.
    scale: float | None = Field(default=None, gt=0, le=MAX_ROWS)
    columns: dict[Name, AnyColumn] = Field(default_factory=dict)
    # A table derived from others (its rows and columns are its own), instead of columns.
    enrollments: Enrollments | None = None
    # Unique keys over several columns (a natural key: student, course and term).
    unique: list[Annotated[list[Name], Field(min_length=1, max_length=MAX_KEY_COLUMNS)]] = Field(
        default_factory=list, max_length=MAX_UNIQUE_KEYS
    )

    def schema_columns(self) -> dict[str, Column]:
        """Its columns in the order of every output: the primary key first, then the spec's."""
        columns = self.enrollments.columns() if self.enrollments else dict(self.columns)
        keys = {name: column for name, column in columns.items() if column.primary_key}
        return keys | columns

    def parents(self) -> set[str]:
        if self.enrollments:
            return {self.enrollments.students, self.enrollments.courses}
        found = {parent for column in self.columns.values() for parent, _ in column.parents()}
        found |= {c.references.table for c in self.columns.values() if c.references}
        return found

    @model_validator(mode="after")
    def _one_key(self) -> "Table":
        if bool(self.columns) == bool(self.enrollments):
            raise ValueError("give columns, or enrollments, not both")
        if self.enrollments and (self.rows or self.scale):
            raise ValueError("an enrollments table's rows follow from its courses")
        keys = [name for name, column in self.columns.items() if column.primary_key]
        if len(keys) > 1:
            raise ValueError(f"more than one primary key: {', '.join(keys)}")
        if self.rows is not None and self.scale is not None:
            raise ValueError("give rows or scale, not both")
        return self

    def count(self, rows: int) -> int:
        """Its rows for --rows N: its own count, or N scaled (at least 1)."""
        if self.rows is not None:
            return self.rows
        return max(1, round(rows * (self.scale if self.scale is not None else 1.0)))


class Spec(BaseModel):
    model_config = FINITE

    tables: dict[Name, Table] = Field(min_length=1, max_length=256)

    def order(self) -> list[str]:
        """Tables parents first; refused when foreign keys form a cycle."""
        graph = {name: table.parents() for name, table in self.tables.items()}
        try:
            return list(TopologicalSorter(graph).static_order())
        except CycleError as cycle:
            raise ValueError(f"foreign keys form a cycle: {' -> '.join(cycle.args[1])}") from None

    def column_order(self) -> list[list]:
        """[table, [its columns]] in the spec's order: kept beside the spec where it is stored
        as canonical JSON (whose sorted keys would put every table's columns alphabetically)."""
        return [[name, list(table.columns)] for name, table in self.tables.items()]

    def reference(self, table: str, name: str) -> tuple[str, str] | None:
        """(table, column) a column's values are keys of: its foreign key in SQL. A lookup of
        a key is that key too (a course's department, looked up through its teacher)."""
        column = self.tables[table].schema_columns()[name]
        if isinstance(column, ForeignKey):
            return column.table, column.column
        if column.references is not None:
            return column.references.table, column.references.column
        if isinstance(column, Lookup):
            via = self.tables[table].columns[column.via]
            return self.reference(via.table, column.column)
        return None

    def references(self, table: str) -> dict[str, tuple[str, str]]:
        """Every column of the table that is a key of another: column -> (table, column)."""
        found = {}
        for name in self.tables[table].schema_columns():
            if (target := self.reference(table, name)) is not None:
                found[name] = target
        return found

    def nullable(self, table: str, name: str) -> bool:
        """Whether a value can be null: its own nulls, or those of the column a key or a
        lookup copies (a NOT NULL on a lookup of a column with nulls would refuse the rows)."""
        while True:
            column = self.tables[table].schema_columns()[name]
            if column.null:
                return True
            if isinstance(column, ForeignKey):
                table, name = column.table, column.column
            elif isinstance(column, Lookup):
                via = self.tables[table].columns[column.via]
                if via.null:  # a row without a parent has nothing to look up
                    return True
                table, name = via.table, column.column
            else:
                return False

    def check(self, rows: int) -> dict[str, int]:
        """Every table's row count for --rows N (derived tables left out: their data
        decides), after checking what depends on it."""
        counts = {
            name: table.count(rows) for name, table in self.tables.items() if not table.enrollments
        }
        for name, count in counts.items():
            if count > MAX_ROWS:
                raise ValueError(f"tables.{name}: {count:,} rows, more than {MAX_ROWS:,}")
        for name, table in self.tables.items():
            for column_name, column in table.columns.items():
                where = f"tables.{name}.columns.{column_name}"
                _check_references(self, name, column, where)
                if column.references is not None:
                    _check_declared_reference(self, counts, column, where)
                if isinstance(column, Sequence) and not column.fits(counts[name]):
                    raise ValueError(
                        f"{where}: start {column.start} step {column.step} passes the largest "
                        f"64-bit integer within {counts[name]:,} rows"
                    )
                _check_timetable(self, name, column, where, counts)
                distinct = column.distinct()
                if column.unique and distinct is not None and distinct < counts[name]:
                    raise ValueError(
                        f"{where}: unique, but it has {distinct:,} distinct values for "
                        f"{counts[name]:,} rows"
                    )
                if column.unique and isinstance(column, ForeignKey | Lookup):
                    _check_unique_key_column(self, counts, name, column, where)
            for index, key in enumerate(table.unique):
                where = f"tables.{name}.unique[{index}]"
                _check_unique_key(self, table, key, counts.get(name), where)
        self.order()
        # What follows keys from table to table: every key resolves, and none forms a cycle.
        for name, table in self.tables.items():
            if table.enrollments:
                table.enrollments.check(self, f"tables.{name}.enrollments")
            for column_name, column in table.columns.items():
                if column.primary_key and self.nullable(name, column_name):
                    raise ValueError(
                        f"tables.{name}.columns.{column_name}: a primary key cannot be null, "
                        "but the column it copies has nulls"
                    )
        return counts


def keeps_distinct(spec: Spec, table: str, name: str) -> bool:
    """Whether a column's values never repeat (nulls aside): a sequence, or a unique column
    (which the generator keeps unique, or the spec is refused)."""
    column = spec.tables[table].schema_columns()[name]
    return isinstance(column, Sequence) or column.unique


def _check_unique_key_column(
    spec: Spec, counts: dict[str, int], name: str, column: "ForeignKey | Lookup", where: str
) -> None:
    """A unique foreign key takes a permutation of its parent's rows: one parent row per
    child row, so no more children than parents, and the parent's column must not repeat
    either. A lookup is unique only through a unique foreign key, of a column that does
    not repeat."""
    if isinstance(column, Lookup):
        via = spec.tables[name].columns[column.via]
        if not via.unique:
            raise ValueError(
                f"{where}: unique, but a lookup copies the row its key {column.via!r} chose, "
                f"and {column.via} is not unique (two rows may share a parent): mark "
                f"{column.via} unique, or drop unique here"
            )
        parent, parent_column = via.table, column.column
    else:
        parent, parent_column = column.table, column.column
        children, parents = counts[name], counts[parent]
        if children > parents:
            raise ValueError(
                f"{where}: a unique foreign key gives each row its own row of {parent}, but "
                f"{name} has {children:,} rows and {parent} only {parents:,}: give {parent} "
                f"at least {children:,} rows or {name} fewer, or use unique_per"
            )
    if not keeps_distinct(spec, parent, parent_column):
        raise ValueError(
            f"{where}: unique, but it copies {parent}.{parent_column}, whose values repeat: "
            f"that column must be a sequence or unique"
        )


def _check_declared_reference(spec: Spec, counts: dict[str, int], column: Column, where: str):
    """A declared reference is a key only if every value the column can take is a row of the
    table it names: checked here for values that can be listed (cycle, choice, integer) and
    a sequence (the key a generated table has); anything else is refused, never assumed."""
    target = column.references
    named = f"references {target.table}.{target.column}"
    if isinstance(column, ForeignKey | Lookup):
        raise ValueError(f"{where}: a {column.kind} is a key already; give no references")
    if target.table not in spec.tables or spec.tables[target.table].enrollments:
        raise ValueError(f"{where}: {named}, a table the spec does not generate from columns")
    parent = spec.tables[target.table].columns.get(target.column)
    if not isinstance(parent, Sequence) or not (parent.primary_key or parent.unique):
        raise ValueError(f"{where}: {named}, which must be a sequence that is the primary key")
    if parent.null:  # a row whose key is null is no row a value can name
        raise ValueError(f"{where}: {named}, which has nulls: that sequence must have none")
    if isinstance(column, Choice | Cycle):
        values = column.values
    elif isinstance(column, Integers) and abs(parent.step) == 1:
        values = [column.min, column.max]  # keys without gaps: the ends hold the range
    elif isinstance(column, Integers):
        values = range(column.min, column.max + 1)  # a gap shows by the second value
    else:
        raise ValueError(
            f"{where}: {named}: only cycle, choice and integer columns may declare references "
            "(their values can all be checked against that table)"
        )
    count = counts[target.table]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: {named}, but {value!r:.40} is not an integer key")
        steps, off = divmod(value - parent.start, parent.step)
        if off or not 0 <= steps < count:
            raise ValueError(
                f"{where}: {named}, but {value} is none of its {count:,} rows' {target.column}"
            )


def _check_unique_key(
    spec: Spec, table: Table, key: list[str], count: int | None, where: str
) -> None:
    """A unique key over several columns is declared only where the generator keeps it:
    a unique or primary-key column among them, an enrollments table's (student, course,
    term), or cycles whose combinations, listed, do not repeat within the table's rows."""
    columns = table.schema_columns()
    for name in key:
        if name not in columns:
            raise ValueError(f"{where}: names a missing column {name!r}")
    if len(set(key)) != len(key):
        raise ValueError(f"{where}: names a column twice")
    chosen = [columns[name] for name in key]
    if any(column.primary_key or column.unique for column in chosen):
        return
    if table.enrollments and {"student_id", "course_id", "term"} <= set(key):
        return  # a student holds at most one seat of a slot (so of a course) in a term
    for column in chosen:
        if isinstance(column, ForeignKey) and column.unique_per in key:
            if not keeps_distinct(spec, column.table, column.column):
                raise ValueError(
                    f"{where}: ({', '.join(key)}) is not kept unique: unique_per gives distinct "
                    f"rows of {column.table}, but their {column.column} values repeat"
                )
            return  # rows sharing a value of unique_per take distinct parents
    if count is not None and all(isinstance(c, Cycle) and not c.null for c in chosen):
        if count <= MAX_CHECKED_CYCLE_ROWS and _cycles_differ(chosen, count):
            return
        raise ValueError(f"{where}: ({', '.join(key)}) repeats within the table's {count:,} rows")
    raise ValueError(
        f"{where}: ({', '.join(key)}) is not kept unique by the generator: include a unique or "
        "primary-key column, or give cycles whose combinations do not repeat"
    )


def _cycles_differ(cycles: list, count: int) -> bool:
    """Whether rows 0..count-1 of the cycles give count different combinations of values."""
    import numpy as np  # bfd imports numpy only for what needs it

    if math.prod(len(cycle.values) for cycle in cycles) > 2**62:
        return False  # too many combinations to number exactly: not promised
    rows = np.arange(count, dtype=np.int64)
    combined = np.zeros(count, dtype=np.int64)
    for cycle in cycles:
        # Equal values get one code (a cycle may list a value twice).
        first: dict = {}
        keys = [value_key(v, cycle.type) for v in cycle.values]
        codes = np.array([first.setdefault(k, i) for i, k in enumerate(keys)])
        at = (rows // cycle.repeat) % len(cycle.values)
        combined = combined * len(cycle.values) + codes[at]
    return len(np.unique(combined)) == count


def _check_references(spec: Spec, name: str, column: Column, where: str) -> None:
    table = spec.tables[name]
    for parent, parent_column in column.parents():
        if parent not in spec.tables:
            near = did_you_mean(parent, spec.tables)
            raise ValueError(f"{where}: foreign key to a missing table {parent!r}{near}")
        if parent_column not in spec.tables[parent].columns:
            near = did_you_mean(parent_column, spec.tables[parent].columns)
            raise ValueError(
                f"{where}: foreign key to a missing column {parent}.{parent_column}{near}"
            )
    for sibling in column.siblings():
        if sibling not in table.columns:
            near = did_you_mean(sibling, table.columns)
            raise ValueError(f"{where}: names a missing column {name}.{sibling}{near}")
    if isinstance(column, Lookup):
        via = table.columns[column.via]
        if not isinstance(via, ForeignKey):
            raise ValueError(f"{where}: via {column.via!r} is not a foreign_key column")
        if via.table not in spec.tables:
            raise ValueError(f"{where}: via {column.via!r}, a key to a missing table {via.table!r}")
        if column.column not in spec.tables[via.table].columns:
            near = did_you_mean(column.column, spec.tables[via.table].columns)
            raise ValueError(f"{where}: {via.table} has no column {column.column!r}{near}")


def _check_timetable(
    spec: Spec, name: str, column: Column, where: str, counts: dict[str, int]
) -> None:
    """unique_per and at_most: possible at these row counts, and within the column's bounds."""
    table = spec.tables[name]
    if isinstance(column, ForeignKey) and column.unique_per:
        per = table.columns[column.unique_per]
        if not isinstance(per, Cycle) or len(set(per.values)) != len(per.values):
            raise ValueError(
                f"{where}: unique_per {column.unique_per!r} must be a cycle of distinct values"
            )
        most, parents = per.most_per_value(counts[name]), counts[column.table]
        if most > parents:
            raise ValueError(
                f"{where}: unique per {column.unique_per}, but {most:,} rows of {name} share "
                f"a {column.unique_per} and {column.table} has {parents:,} rows: give "
                f"{column.table} at least {most:,} rows, or {name} fewer"
            )
    if isinstance(column, Integers) and column.at_most:
        via = table.columns[column.at_most.via]
        if not isinstance(via, ForeignKey):
            raise ValueError(f"{where}: at_most via {column.at_most.via!r}: not a foreign_key")
        parent = spec.tables.get(via.table)
        bound = parent.columns.get(column.at_most.column) if parent else None
        named = f"{via.table}.{column.at_most.column}"
        if not isinstance(bound, Integers) or bound.null:
            raise ValueError(f"{where}: at_most {named} must be an integer column without nulls")
        if bound.min < column.min:
            raise ValueError(
                f"{where}: at_most {named}, which can be {bound.min}, below min {column.min}"
            )


_COUNT = re.compile(r"\{(\d+)\}")
_DIGITS = "0123456789"


def parse_pattern(pattern: str) -> list[str]:
    """The pattern as a list of positions, each the characters it may hold.

    Its language: literals, classes ([A-Z], [a-z0-9_], \\d), counts ({3}) after either, and
    a backslash before a character that is not a letter or digit for that character itself.
    Whatever else looks like regex repetition or classes ({2,5}, *, +, ?, [^a], \\w, an
    unclosed [ or {) is refused, never read as literals: what the pattern makes is exactly
    what it says. Parentheses, | and . are literals, as in "(555) 010-\\d{4}".
    """
    positions: list[str] = []
    at = 0
    while at < len(pattern):
        chars, at = _atom(pattern, at)
        repeat = 1
        if at < len(pattern) and pattern[at] == "{":
            count = _COUNT.match(pattern, at)
            if count is None:
                raise ValueError(
                    f"pattern {pattern!r}: a count is {{N}} (N digits); write \\{{ for a literal {{"
                )
            repeat = int(count.group(1))
            if repeat > MAX_PATTERN_CHARS:
                raise ValueError(
                    f"pattern {pattern!r}: count {{{repeat}}} is over the limit of "
                    f"{MAX_PATTERN_CHARS} characters"
                )
            at = count.end()
        positions += [chars] * repeat
        if len(positions) > MAX_PATTERN_CHARS:
            raise ValueError(
                f"pattern {pattern!r} makes more than {MAX_PATTERN_CHARS} characters (the limit)"
            )
    return positions


def _atom(pattern: str, at: int) -> tuple[str, int]:
    """The characters of the position at `at`, and where the next begins."""
    char = pattern[at]
    if char == "[":
        close = pattern.find("]", at + 1)
        while close > 0 and _escaped(pattern, close, at + 1):
            close = pattern.find("]", close + 1)
        if close < 0:
            raise ValueError(f"pattern {pattern!r}: [ is not closed; write \\[ for a literal [")
        return _expand(pattern[at + 1 : close], pattern), close + 1
    if char == "\\":
        if at + 1 >= len(pattern):
            raise ValueError(f"pattern {pattern!r} ends with a lone backslash")
        return _escape(pattern[at + 1], pattern), at + 2
    if char in "{}":
        raise ValueError(f"pattern {pattern!r}: {char} where no count can be; write \\{char}")
    if char in "*+?":
        raise ValueError(
            f"pattern {pattern!r}: {char} repeats in a regex, which this pattern is not: give a "
            f"count such as {{3}}, or write \\{char} for a literal {char}"
        )
    return char, at + 1


def _escaped(text: str, at: int, start: int) -> bool:
    """Whether text[at] follows an odd run of backslashes (from start on)."""
    run = 0
    while at - run - 1 >= start and text[at - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def _escape(char: str, pattern: str) -> str:
    if char == "d":
        return _DIGITS
    if char.isalnum():
        raise ValueError(
            f"pattern {pattern!r}: \\{char} is not a class this pattern knows (\\d, or [..])"
        )
    return char


def _expand(body: str, pattern: str) -> str:
    if not body:
        raise ValueError(f"pattern {pattern!r}: [] is an empty class")
    if body.startswith("^"):
        raise ValueError(f"pattern {pattern!r}: negated classes [^..] are not supported")
    chars: list[str] = []
    at = 0
    while at < len(body):
        low, at = _class_char(body, at, pattern)
        if at + 1 < len(body) and body[at] == "-" and len(low) == 1:
            high, at = _class_char(body, at + 1, pattern)
            if len(high) != 1 or ord(high) < ord(low):
                raise ValueError(f"pattern {pattern!r}: [{body}]: {low}-{high} is an empty range")
            if ord(high) - ord(low) >= MAX_CLASS_CHARS:
                raise ValueError(
                    f"pattern {pattern!r}: [{body}] holds more than {MAX_CLASS_CHARS} characters"
                )
            chars += [chr(c) for c in range(ord(low), ord(high) + 1)]
        else:
            chars += list(low)
    unique = "".join(dict.fromkeys(chars))
    if len(unique) > MAX_CLASS_CHARS:
        raise ValueError(
            f"pattern {pattern!r}: [{body}] holds more than {MAX_CLASS_CHARS} characters"
        )
    check_text([unique], f"pattern {pattern!r}: the class [{body}]")
    return unique


def _class_char(body: str, at: int, pattern: str) -> tuple[str, int]:
    if body[at] == "\\":
        if at + 1 >= len(body):
            raise ValueError(f"pattern {pattern!r}: [{body}] ends with a lone backslash")
        return _escape(body[at + 1], pattern), at + 2
    return body[at], at + 1


def restored(document: dict, column_order: list | None) -> Spec:
    """A spec stored as canonical JSON, its tables and columns in the order they were given
    (Spec.column_order, stored beside it); a job stored before that kept its sorted order."""
    if column_order:
        tables = document["tables"]
        document = {
            **document,
            "tables": {
                name: {**tables[name], "columns": {c: tables[name]["columns"][c] for c in names}}
                for name, names in column_order
            },
        }
    # Checked at submit: the defaults model_dump wrote are not options the user gave.
    return Spec.model_validate(document, context={"stored": True})


# What a spec file without a table lacks (bfctl says it of an empty file too).
NO_TABLES = "it defines no tables (give at least one: [tables.NAME] with its rows and columns)"


def load(text: str, name: str) -> Spec:
    """A spec from the text of a .toml, .json or .yaml file; refused with the field named."""
    if not text.strip():
        raise InvalidArgument(f"{name}: the file is empty: {NO_TABLES}")
    try:
        if name.endswith(".toml"):
            document = tomllib.loads(text)
        elif name.endswith(".json"):
            document = json.loads(text)
        elif name.endswith((".yaml", ".yml")):
            document = yaml.safe_load(text)
        else:
            raise InvalidArgument(f"{name}: a spec is a .toml, .json or .yaml file")
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{name}: {json_problem(exc)}") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"{name}: not valid: {one_line(str(exc))}") from None
    except RecursionError:
        raise InvalidArgument(f"{name}: nested too deeply to be a spec") from None
    if document is None or document == {}:  # a file of comments only
        raise InvalidArgument(f"{name}: {NO_TABLES}")
    try:
        return Spec.model_validate(document)
    except (ValidationError, RecursionError) as exc:
        what = describe(exc) if isinstance(exc, ValidationError) else "nested too deeply"
        raise InvalidArgument(f"{name}: {what}") from None
