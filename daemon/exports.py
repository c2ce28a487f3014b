"""What every kind's `bfctl export` shares: the answer, and Parquet streamed from the store.

Each file is written under a temporary name, fsynced and renamed; the rows stream
from one read transaction in pages, so a job of millions of items never sits in
memory and every file of one export describes the same moment.
"""

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import apsw

from bulkforge.daemon.durable import fsync_or_die, replace_durably, write_durably

PAGE_ROWS = 65_536


@dataclass(frozen=True)
class Exported:
    paths: list[Path]
    total: int
    successful: int
    failed: int
    # What the items are, plural ("items", "zips"): the job's kind says.
    item_unit: str = "items"


def write_parquet(conn: apsw.Connection, path: Path, schema, sql: str, params: tuple) -> int:
    """The query's rows as a Parquet file of the schema (a pyarrow.Schema), written
    durably; how many. pyarrow is imported here, by the first export, not by bfd's start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    temporary = path.with_name(f".{path.name}.tmp")
    written = 0
    cursor = conn.execute(sql, params)
    with pq.ParquetWriter(temporary, schema) as out:
        while page := list(itertools.islice(cursor, PAGE_ROWS)):
            columns = zip(*page, strict=True)
            arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
            out.write_table(pa.table(arrays, schema=schema))
            written += len(page)
        if not written:
            out.write_table(schema.empty_table())
    replace_durably(temporary, path)
    return written


def write_json(path: Path, document: dict) -> None:
    """A JSON document written durably, and its directory fsynced (it ends an export)."""
    write_durably(path, json.dumps(document, indent=2).encode() + b"\n")
    fsync_or_die(path.parent)
