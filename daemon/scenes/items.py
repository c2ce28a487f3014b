"""The items of a scenes job, read from Parquet in row-group chunks, never whole.

Input is one Parquet file or a directory of them (`*.parquet`, in name order).
Only the key, URL and kept columns are read, a record batch at a time, so a
10M-row input costs one batch of memory. What makes the input unusable (not
Parquet, a missing column) is refused at submit time with a message naming the
file. A row without a usable key (null, empty, too long) is reported by row: the
caller refuses the job when such a row is in the first chunk, and skips and
counts it later, when the job is already working. A null URL is not a problem
of the input: that item is registered and fails on its own at its fetch step,
where the operator looks for it.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.scenes.request import Columns
from bulkforge.daemon.validation import open_input

CHUNK_ROWS = 8_192
MAX_KEY_BYTES = 1024
READ_BUFFER = 1024**2


@dataclass(frozen=True)
class Rejected:
    """A row that cannot be an item; `row` is 1-based in its file."""

    source: Path
    row: int
    why: str

    def describe(self) -> str:
        return f"{self.source} row {self.row}: {self.why}"


@dataclass(frozen=True)
class ItemChunk:
    """One chunk of items in input order, and the rows of it that cannot be items."""

    keys: list[str]
    urls: list[str | None]
    # The kept columns of each item as a JSON object, or None when none are kept.
    metas: list[str | None]
    rows: list[int]  # 1-based row of each item in its file
    rejected: list[Rejected]
    source: Path
    read: int  # input rows this chunk covers, items and rejected alike


def input_files(path: Path) -> list[tuple[Path, Path | None]]:
    """The Parquet files of an input: the file itself, or a directory's *.parquet by name;
    each with the root it must stay inside (the directory; None for a file named alone)."""
    if not path.is_absolute():
        raise InvalidArgument(f"input {str(path)!r} must be an absolute path")
    if path.is_dir():
        # Every *.parquet name, whatever it is: one that is no regular file inside the
        # directory is refused naming it (open_checked), never skipped unsaid.
        found = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not found:
            raise InvalidArgument(f"input {path}: the directory holds no *.parquet file")
        return [(file, path) for file in found]
    if not path.exists() and not path.is_symlink():
        raise InvalidArgument(f"input {path}: no such file or directory (bfd reads it itself)")
    return [(path, None)]


def open_checked(path: Path, columns: Columns, root: Path | None = None) -> pq.ParquetFile:
    """The Parquet file, with every wanted column present; InvalidArgument saying why not.

    Opened by the one rule for inputs (validation.open_input): a regular file, inside
    the input directory when it came from one; never a FIFO, a device or a socket.
    """
    handle = open_input(path, "input", root=root)
    try:
        # No pre-buffering, a small read buffer: a whole row group's columns are not read
        # ahead (measured: +10 MB of RSS over 2M rows instead of +40 MB).
        parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=READ_BUFFER)
    except Exception as exc:
        handle.close()
        raise InvalidArgument(f"input {path}: not a readable Parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    missing = [name for name in columns.wanted() if name not in names]
    if missing:
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise InvalidArgument(
            f"input {path}: no column {', '.join(map(repr, missing))} (it has: {shown})"
        )
    return parquet


def _plain(kind: pa.DataType) -> pa.DataType:
    """The type a kept column has in metadata and shard indexes: JSON's, else a string."""
    if pa.types.is_integer(kind) and kind != pa.uint64():  # uint64 may not fit in int64
        return pa.int64()
    if pa.types.is_floating(kind):
        return pa.float64()
    if pa.types.is_boolean(kind):
        return pa.bool_()
    return pa.string()


class Input:
    """A job's input files, checked, with their row count and kept columns' schema."""

    def __init__(self, path: Path, columns: Columns):
        self.columns = columns
        self.files = [(file, open_checked(file, columns, root)) for file, root in input_files(path)]
        self.rows_total = sum(parquet.metadata.num_rows for _, parquet in self.files)
        self.kept = _kept_schema(self.files, columns.kept())

    def chunks(self, start: int = 0, rows: int = CHUNK_ROWS) -> Iterator[ItemChunk]:
        """The items from input row `start` (0-based, across the files) on, a chunk at a time."""
        offset = 0
        for file, parquet in self.files:
            count = parquet.metadata.num_rows
            if start < offset + count:
                yield from self._file_chunks(file, parquet, max(0, start - offset), rows)
            offset += count

    def _file_chunks(
        self, file: Path, parquet: pq.ParquetFile, skip: int, rows: int
    ) -> Iterator[ItemChunk]:
        """A file's chunks from its row `skip` on; whole row groups before it are not read."""
        groups, first, begins = [], 0, 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if begins + size > skip:
                first = first if groups else begins
                groups.append(group)
            begins += size
        if not groups:
            return
        at = first  # 0-based row of the next batch in the file
        # One thread: arrow's decoding threads each keep their own malloc arena (RSS).
        batches = parquet.iter_batches(
            batch_size=rows, row_groups=groups, columns=self.columns.wanted(), use_threads=False
        )
        for batch in batches:
            if at + batch.num_rows <= skip:
                at += batch.num_rows
                continue
            cut = max(0, skip - at)
            yield self._chunk(pa.Table.from_batches([batch]).slice(cut), file, at + cut)
            at += batch.num_rows

    def _chunk(self, table: pa.Table, file: Path, at: int) -> ItemChunk:
        keys = table.column(self.columns.key).to_pylist()
        problems = _key_problems(keys)
        kept = self.columns.kept()
        sources = [name for name, _ in kept]
        metas = _metas(table, self.kept, sources) if kept else [None] * table.num_rows
        urls = table.column(self.columns.url).to_pylist()
        chunk = ItemChunk([], [], [], [], [], file, table.num_rows)
        for offset, key in enumerate(keys):
            row = at + offset + 1
            if offset in problems:
                chunk.rejected.append(Rejected(file, row, problems[offset]))
                continue
            chunk.keys.append(str(key))
            url = urls[offset]
            chunk.urls.append(None if url is None else str(url))
            chunk.metas.append(metas[offset])
            chunk.rows.append(row)
        return chunk


def _kept_schema(
    files: list[tuple[Path, pq.ParquetFile]], keep: list[tuple[str, str]]
) -> pa.Schema:
    """The kept columns under their kept names, in their types, the same in every file."""

    def schema(parquet: pq.ParquetFile) -> pa.Schema:
        fields = parquet.schema_arrow
        return pa.schema([pa.field(as_, _plain(fields.field(n).type)) for n, as_ in keep])

    first_file, first = files[0]
    kept = schema(first)
    for file, parquet in files[1:]:
        other = schema(parquet)
        if other != kept:
            raise InvalidArgument(
                f"input: the kept columns of {file} have other types than in {first_file}"
            )
    return kept


def _key_problems(keys: list) -> dict[int, str]:
    """Offsets of the rows whose key cannot name an item, and why."""
    found = {}
    for offset, key in enumerate(keys):
        if key is None:
            found[offset] = "no key (null)"
        elif not (0 < len(str(key).encode()) <= MAX_KEY_BYTES):
            found[offset] = f"the key is empty or longer than {MAX_KEY_BYTES} bytes"
    return found


def _metas(table: pa.Table, kept: pa.Schema, sources: list[str]) -> list[str]:
    """Each row's kept columns (read from `sources`) as a JSON object, under the names and
    in the types of `kept` (NaN as null)."""
    columns = [
        _plain_values(table.column(source), field.type)
        for source, field in zip(sources, kept, strict=True)
    ]
    columns = [[None if v != v else v for v in column] for column in columns]
    return [
        json.dumps(dict(zip(kept.names, values, strict=True)), separators=(",", ":"))
        for values in zip(*columns, strict=True)
    ]


def _plain_values(column: pa.ChunkedArray, kind: pa.DataType) -> list:
    try:
        return column.cast(kind).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [None if value is None else str(value) for value in column.to_pylist()]
