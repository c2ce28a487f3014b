"""The items of a scenes job, read from Parquet in row-group chunks, never whole.

Input is one Parquet file or a directory of them (`*.parquet`, in name order).
Only the key, URL and kept columns are read, a record batch at a time, so a
10M-row input costs one batch of memory. What makes the input unusable (not
Parquet, a missing column, a null key) is refused whole at submit time with a
message naming the file and row; a null URL is not: that item is registered
and fails on its own at its fetch step, where the operator looks for it.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bulkforge.daemon.errors import InvalidArgument

CHUNK_ROWS = 65_536
MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class Columns:
    key: str
    url: str
    keep: tuple[str, ...] = ()

    def wanted(self) -> list[str]:
        return list(dict.fromkeys([self.key, self.url, *self.keep]))


@dataclass(frozen=True)
class ItemChunk:
    """One chunk of items in input order: keys (str), URLs (str or None), kept columns."""

    keys: list[str]
    urls: list[str | None]
    kept: pa.Table
    first_row: int  # 1-based number of the chunk's first row in its file
    source: Path


def input_files(path: Path) -> list[Path]:
    """The Parquet files of an input: the file itself, or a directory's *.parquet by name."""
    if not path.is_absolute():
        raise InvalidArgument(f"--input {str(path)!r} must be an absolute path")
    if path.is_dir():
        found = sorted(p for p in path.glob("*.parquet") if p.is_file())
        if not found:
            raise InvalidArgument(f"--input {path}: the directory holds no *.parquet file")
        return found
    if not path.is_file():
        raise InvalidArgument(f"--input {path}: no such file or directory (bfd reads it itself)")
    return [path]


def open_checked(path: Path, columns: Columns) -> pq.ParquetFile:
    """The Parquet file, with every wanted column present; InvalidArgument saying why not."""
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise InvalidArgument(f"--input {path}: not a readable Parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    missing = [name for name in columns.wanted() if name not in names]
    if missing:
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise InvalidArgument(
            f"--input {path}: no column {', '.join(map(repr, missing))} (it has: {shown})"
        )
    return parquet


def chunks(path: Path, columns: Columns, rows: int = CHUNK_ROWS) -> Iterator[ItemChunk]:
    """Every item of the input, a chunk at a time; the files are checked before any is read."""
    files = input_files(path)
    opened = [(file, open_checked(file, columns)) for file in files]
    for file, parquet in opened:
        first = 1
        for batch in parquet.iter_batches(batch_size=rows, columns=columns.wanted()):
            table = pa.Table.from_batches([batch])
            yield ItemChunk(
                keys=_keys(table.column(columns.key), file, first),
                urls=_urls(table.column(columns.url)),
                kept=table.select(list(columns.keep)),
                first_row=first,
                source=file,
            )
            first += batch.num_rows


def _keys(column: pa.ChunkedArray, file: Path, first: int) -> list[str]:
    if column.null_count:
        row = first + next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
        raise InvalidArgument(f"--input {file}: row {row} has no key (null); every item needs one")
    keys = [str(value) for value in column.to_pylist()]
    for offset, key in enumerate(keys):
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            raise InvalidArgument(
                f"--input {file}: row {first + offset} has an empty key or one longer than "
                f"{MAX_KEY_BYTES} bytes"
            )
    return keys


def _urls(column: pa.ChunkedArray) -> list[str | None]:
    return [None if value is None else str(value) for value in column.to_pylist()]
