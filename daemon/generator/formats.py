"""A chunk of a table as the bytes of one part file: Parquet, CSV, JSON Lines or SQL.

Every writer is vectorised over Arrow arrays (no Python object per row) and
deterministic: the same chunk always gives the same bytes. JSON and SQL text is
built column by column: each value rendered as a literal, then joined into rows.
"""

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.text import join

EXTENSIONS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl", "sql": "sql"}
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "row_group_size": 1 << 20,
    "version": "2.6",
}
# Rows per INSERT statement.
INSERT_ROWS = 1000


def part_name(index: int, fmt: str) -> str:
    return f"part-{index:05d}.{EXTENSIONS[fmt]}"


def render(
    rows: pa.Table, fmt: str, table: str, dialect: str = "sqlite", few: list[str] | None = None
) -> bytes:
    """The part file's bytes for these rows of the table.

    few names the columns of few distinct values: Parquet dictionary-encodes only
    those (on the students table that wrote 24% faster, at the same size, than
    dictionaries tried on every column and given up on the unique ones).
    """
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(rows, sink, use_dictionary=few or False, **PARQUET_OPTIONS)
        return sink.getvalue()
    if fmt == "csv":
        sink = io.BytesIO()
        pacsv.write_csv(rows, sink, pacsv.WriteOptions(quoting_style="needed"))
        return sink.getvalue()
    if fmt == "jsonl":
        return _lines(_json_objects(rows))
    return _inserts(rows, table, dialect)


def _lines(text: pa.Array) -> bytes:
    return _concatenated(join([text, "\n"]))


def _concatenated(text: pa.Array) -> bytes:
    """A string array's values end to end: its data buffer, with no Python object per row
    (a part's text is one array: at most 2 GiB, which the submit checks)."""
    if not len(text):
        return b""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)
    first, last = offsets[text.offset], offsets[text.offset + len(text)]
    return bytes(memoryview(text.buffers()[2])[first:last])


def _json_objects(rows: pa.Table) -> pa.Array:
    pieces: list = ["{"]
    for n, name in enumerate(rows.column_names):
        pieces += ["," if n else "", f'"{name}":', _json_values(rows[name])]
    pieces.append("}")
    return join(pieces)


def _json_values(column: pa.ChunkedArray) -> pa.Array:
    kind = column.type
    if pa.types.is_boolean(kind):
        text = pc.if_else(column, "true", "false")
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        text = pc.cast(column, pa.string())
    elif pa.types.is_timestamp(kind):
        text = _quoted(_iso_timestamp(column))
    else:  # strings and dates
        text = _quoted(pc.cast(column, pa.string()))
    return pc.fill_null(text, "null")


def _quoted(text: pa.Array) -> pa.Array:
    """A JSON string: quotes and backslashes escaped (specs refuse control characters)."""
    escaped = pc.replace_substring(text, "\\", "\\\\")
    escaped = pc.replace_substring(escaped, '"', '\\"')
    return join(['"', escaped, '"'])


def _iso_timestamp(column: pa.ChunkedArray) -> pa.Array:
    return pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ")


def _inserts(rows: pa.Table, table: str, dialect: str) -> bytes:
    """Batched multi-row INSERT statements in the dialect."""
    if not rows.num_rows:
        return b""
    names = ", ".join(quote_name(name, dialect) for name in rows.column_names)
    pieces: list = ["("]
    for n, name in enumerate(rows.column_names):
        pieces += [", " if n else "", _sql_values(rows[name], dialect)]
    pieces.append(")")
    head = f"INSERT INTO {quote_name(table, dialect)} ({names}) VALUES\n"
    # Row i opens a statement when i % INSERT_ROWS == 0 and closes one at the block's end.
    at = np.arange(rows.num_rows) % INSERT_ROWS
    last = (at == INSERT_ROWS - 1) | (np.arange(rows.num_rows) == rows.num_rows - 1)
    opening = pc.if_else(pa.array(at == 0), head, "")
    closing = pc.if_else(pa.array(last), ";\n", ",\n")
    return _concatenated(join([opening, *pieces, closing]))


def _sql_values(column: pa.ChunkedArray, dialect: str) -> pa.Array:
    kind = column.type
    if pa.types.is_boolean(kind):
        text = pc.if_else(column, "TRUE", "FALSE")
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        text = pc.cast(column, pa.string())
    else:
        literal = (
            pc.strftime(column, format="%Y-%m-%d %H:%M:%S")
            if pa.types.is_timestamp(kind)
            else pc.cast(column, pa.string())
        )
        if dialect == "mysql":
            literal = pc.replace_substring(literal, "\\", "\\\\")
        text = join(["'", pc.replace_substring(literal, "'", "''"), "'"])
    return pc.fill_null(text, "NULL")


def quote_name(name: str, dialect: str) -> str:
    return f"`{name}`" if dialect == "mysql" else f'"{name}"'


# How MySQL stores every table: InnoDB (the engine that enforces foreign keys), and
# utf8mb4 (all of Unicode) compared byte for byte, so values that differ only in case or
# accents stay distinct under a UNIQUE key, as they were generated.
MYSQL_TABLE = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"


def create_tables(spec: s.Spec, order: list[str], types: dict, dialect: str) -> str:
    """CREATE TABLE statements, parents first: columns in the output's order with NOT NULL,
    then the primary key, the unique keys and the foreign keys, each declared at the table's
    level (MySQL ignores a REFERENCES written after a column)."""
    statements = []
    for table in order:
        lines = []
        for name in spec.tables[table].schema_columns():
            line = f"  {quote_name(name, dialect)} {_sql_type(types[table][name], dialect)}"
            if not spec.nullable(table, name):
                line += " NOT NULL"
            lines.append(line)
        lines += _constraints(spec, table, dialect)
        body = ",\n".join(lines)
        after = MYSQL_TABLE if dialect == "mysql" else ""
        statements.append(f"CREATE TABLE {quote_name(table, dialect)} (\n{body}\n){after};\n")
    return "".join(statements)


def _constraints(spec: s.Spec, table: str, dialect: str) -> list[str]:
    def names(columns) -> str:
        return ", ".join(quote_name(column, dialect) for column in columns)

    columns = spec.tables[table].schema_columns()
    found = [f"  PRIMARY KEY ({names([n])})" for n, c in columns.items() if c.primary_key]
    found += [
        f"  UNIQUE ({names([n])})" for n, c in columns.items() if c.unique and not c.primary_key
    ]
    found += [f"  UNIQUE ({names(key)})" for key in spec.tables[table].unique]
    for name, (parent, key) in spec.references(table).items():
        target = f"{quote_name(parent, dialect)} ({names([key])})"
        found.append(f"  FOREIGN KEY ({names([name])}) REFERENCES {target}")
    return found


def _sql_type(kind: pa.DataType, dialect: str) -> str:
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_integer(kind):
        return "BIGINT"
    if pa.types.is_floating(kind):
        return "DOUBLE PRECISION" if dialect == "postgres" else "DOUBLE"
    if pa.types.is_date(kind):
        return "DATE"
    if pa.types.is_time(kind):
        return "TIME"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP" if dialect != "mysql" else "DATETIME"
    return "TEXT" if dialect != "mysql" else "VARCHAR(255)"


# -- the load script: the schema, then every part, parents first ------------------------------

# How each dialect's client runs the script, and what it says first and last. Paths in it
# are relative to DEST: psql's \ir reads them beside the script wherever it is run from;
# sqlite3's .read and mysql's source read them from the working directory (cd DEST).
LOAD = {
    "postgres": {
        "run": "psql -d DB -f DEST/load.sql",
        "head": "\\set ON_ERROR_STOP on\nBEGIN;\n",
        "read": "\\ir {}\n",
        "tail": "COMMIT;\n",
    },
    "sqlite": {
        "run": "cd DEST && sqlite3 DB '.read load.sql'",
        "head": ".bail on\nPRAGMA foreign_keys = ON;\nBEGIN;\n",
        "read": ".read {}\n",
        "tail": "COMMIT;\n",
    },
    "mysql": {
        "run": "cd DEST && mysql DB < load.sql",
        # DDL commits by itself in MySQL: the schema first, then the rows in one transaction.
        "head": "SET NAMES utf8mb4;\nSET foreign_key_checks = 1;\n",
        "read": "source {}\n",
        "after_schema": "START TRANSACTION;\n",
        "tail": "COMMIT;\n",
    },
}


# MySQL's and MariaDB's clients go on past an error inside a `source`d file (only a
# top-level error ends `mysql < load.sql`). So the script checks at the top level, with a
# CHECK that fails: first that none of its tables exists yet, and before its COMMIT that
# each table has all its rows; a failed check ends the client, which rolls the rows back.
MYSQL_CHECK_TABLE = (
    "CREATE TEMPORARY TABLE {name} (table_name VARCHAR(64) NOT NULL, expected BIGINT NOT NULL, "
    "found BIGINT NOT NULL, CONSTRAINT {constraint} CHECK (found = expected));\n"
)


def _mysql_checks(rows: dict[str, int]) -> tuple[list[str], list[str]]:
    """What the MySQL script checks before its schema, and before its COMMIT."""
    before = [MYSQL_CHECK_TABLE.format(name="bulkforge_new_tables", constraint="tables_are_new")]
    before += [
        f"INSERT INTO bulkforge_new_tables SELECT '{table}', 0, count(*) FROM "
        f"information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}';\n"
        for table in rows
    ]
    after = [MYSQL_CHECK_TABLE.format(name="bulkforge_rows", constraint="all_rows_loaded")]
    after += [
        f"INSERT INTO bulkforge_rows SELECT '{table}', {count}, count(*) "
        f"FROM {quote_name(table, 'mysql')};\n"
        for table, count in rows.items()
    ]
    return before, after


def load_script(dialect: str, schema: str, parts: list[str], rows: dict[str, int]) -> str:
    """The script that loads the schema and then every part (given parents first) in one
    run of the dialect's client, stopping at the first error, every foreign key enforced.
    rows: each table's rows, which the MySQL script checks before it commits."""
    how = LOAD[dialect]
    head = f"-- Loads this folder: {how['run']}\n-- (the schema, then every table, parents first)\n"
    before, after = _mysql_checks(rows) if dialect == "mysql" else ([], [])
    reads = [how["read"].format(part) for part in parts]
    schema = how["read"].format(schema) + how.get("after_schema", "")
    return "".join([head, how["head"], *before, schema, *reads, *after, how["tail"]])
