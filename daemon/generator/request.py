"""A generate job as submitted: the spec, how many rows, which seed, which format, where."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.validation import JobName
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import MAX_CHUNK_ROWS, MAX_ROWS, MAX_SEED, sizes_apart

DEFAULT_CHUNK_ROWS = 1_000_000
PRESETS_DIR = Path(__file__).with_name("presets")
PRESETS = ("courses",)
MAX_SPEC_BYTES = 1024**2
FORMATS = ("parquet", "csv", "jsonl", "sql")
DIALECTS = ("sqlite", "postgres", "mysql")
# The length of MySQL's string columns in the schema (formats.py).
MYSQL_VARCHAR = 255
# InnoDB's longest index key (DYNAMIC rows), and a VARCHAR's bytes in one (4 a character).
MYSQL_KEY_BYTES = 3072
MYSQL_VARCHAR_KEY_BYTES = 4 * MYSQL_VARCHAR + 2


@dataclass(frozen=True)
class GenerateRequest:
    name: str
    dest: Path
    model: s.Spec
    rows: int
    seed: int
    format: str
    dialect: str
    chunk_rows: int

    def spec(self) -> dict:
        """The canonical parameters, the spec itself among them: a job never rereads a file."""
        return {
            "spec": self.model.model_dump(mode="json"),
            "column_order": self.model.column_order(),
            "rows": self.rows,
            "seed": self.seed,
            "format": self.format,
            "sql_dialect": self.dialect,
            "dest": str(self.dest),
            "chunk_rows": self.chunk_rows,
        }

    @classmethod
    def of_spec(cls, name: str, stored: dict) -> "GenerateRequest":
        return cls(
            name=name,
            dest=Path(stored["dest"]),
            model=s.restored(stored["spec"], stored.get("column_order")),
            rows=stored["rows"],
            seed=stored["seed"],
            format=stored["format"],
            dialect=stored["sql_dialect"],
            chunk_rows=stored["chunk_rows"],
        )

    def counts(self) -> dict[str, int]:
        return self.model.check(self.rows)


def _keys_are_keys(model: s.Spec) -> None:
    """SQL declares a foreign key only to a PRIMARY KEY or UNIQUE column (schema.sql)."""
    for table_name in model.tables:
        for name, (table, column) in model.references(table_name).items():
            parent = model.tables[table].schema_columns()[column]
            if not (parent.primary_key or parent.unique):
                raise ValueError(
                    f"tables.{table_name}.columns.{name}: a foreign key to "
                    f"{table}.{column}, which is neither unique nor a primary "
                    "key: SQL's REFERENCES needs one (mark it unique or primary_key)"
                )


def _fits_mysql(model: s.Spec, counts: dict[str, int]) -> None:
    """MySQL's strings are VARCHAR(MYSQL_VARCHAR): a longer value would be cut or refused."""
    from bulkforge.daemon.generator import widths

    for table_name, table in model.tables.items():
        for column, spec in table.schema_columns().items():
            if isinstance(spec, s.DateRange | s.TimestampRange) and spec.start.year < 1000:
                raise ValueError(
                    f"tables.{table_name}.columns.{column}: starts in year {spec.start.year}, "
                    "before MySQL's DATE and DATETIME (1000-01-01 on) of sql_dialect 'mysql'"
                )
            chars = widths.text_bytes(model, counts, table_name, column, measure=len)
            if chars is not None and chars > MYSQL_VARCHAR:
                raise ValueError(
                    f"tables.{table_name}.columns.{column}: values of up to {chars:,} characters "
                    f"do not fit MySQL's VARCHAR({MYSQL_VARCHAR}) of sql_dialect 'mysql'"
                )
        for index, key in enumerate(table.unique):
            strings = [
                c for c in key if widths.text_bytes(model, counts, table_name, c) is not None
            ]
            size = len(strings) * MYSQL_VARCHAR_KEY_BYTES + 8 * (len(key) - len(strings))
            if size > MYSQL_KEY_BYTES:
                most, limit = sizes_apart(size, MYSQL_KEY_BYTES)
                raise ValueError(
                    f"tables.{table_name}.unique[{index}]: a key of {len(strings)} string columns "
                    f"(up to {most}) passes InnoDB's key limit of {limit} in sql_dialect 'mysql'"
                )


def preset(name: str) -> tuple[str, str]:
    """A bundled spec's text and file name."""
    path = PRESETS_DIR / f"{name}.toml"
    return path.read_text(encoding="utf-8"), path.name


class SubmitGenerate(BaseModel):
    """A generate job as the request gives it; the spec itself is checked by spec.load."""

    name: JobName
    spec_text: Annotated[str, StringConstraints(max_length=MAX_SPEC_BYTES)] = ""
    spec_name: Annotated[str, StringConstraints(max_length=255)] = ""
    preset: Literal["", *PRESETS] = ""
    rows: int = Field(ge=1, le=MAX_ROWS)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    format: Literal[*FORMATS] = "parquet"
    # Empty: not given (sqlite for --format sql); given with another format it is refused.
    sql_dialect: Literal["", *DIALECTS] = ""
    dest: Annotated[str, StringConstraints(min_length=1)]
    chunk_rows: int = Field(default=DEFAULT_CHUNK_ROWS, ge=1, le=MAX_CHUNK_ROWS)

    @classmethod
    def of(cls, name: str, spec: pb.GenerateSpec) -> "SubmitGenerate":
        given: dict = {
            "name": name,
            "spec_text": spec.spec_text,
            "spec_name": spec.spec_name,
            "preset": spec.preset,
            "rows": spec.rows,
            "seed": spec.seed,
            "dest": spec.dest,
        }
        for field in ("format", "sql_dialect", "chunk_rows"):
            if getattr(spec, field):
                given[field] = getattr(spec, field)
        return cls.model_validate(given)

    @model_validator(mode="after")
    def _absolute(self) -> "SubmitGenerate":
        # A refusal names the request's fields: bfctl checks its flags first, in flag words.
        if not os.path.isabs(self.dest):
            raise ValueError(f"dest {self.dest!r} must be an absolute path")
        from_file = bool(self.spec_text or self.spec_name)
        if from_file == bool(self.preset):
            raise ValueError(
                "give exactly one of spec_text (a spec file's text, with its spec_name) and preset"
            )
        if from_file and not self.spec_name:
            raise ValueError("spec_name is missing: its extension says TOML, JSON or YAML")
        if self.sql_dialect and self.format != "sql":
            raise ValueError(
                f"sql_dialect {self.sql_dialect!r} is for format 'sql' only "
                f"(this job's format is {self.format!r}): leave it out"
            )
        return self

    def request(self) -> GenerateRequest:
        """The request with its spec loaded and checked at --rows: refused, naming the field."""
        text, name = (self.spec_text, self.spec_name) if self.spec_name else preset(self.preset)
        model = s.load(text, name)
        try:
            counts = model.check(self.rows)
            if self.format == "sql":
                _keys_are_keys(model)
            if self.format == "sql" and self.sql_dialect == "mysql":
                _fits_mysql(model, counts)
        except ValueError as exc:
            raise InvalidArgument(f"{name}: {exc}") from None
        return GenerateRequest(
            name=self.name,
            dest=Path(self.dest),
            model=model,
            rows=self.rows,
            seed=self.seed,
            format=self.format,
            dialect=self.sql_dialect or "sqlite",
            chunk_rows=self.chunk_rows,
        )
