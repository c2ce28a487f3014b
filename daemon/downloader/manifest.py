"""Manifests (JSONL, CSV, Parquet) and URL lists, validated row by row at the boundary."""

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bulkforge.daemon.downloader.paths import path_from_url, safe_relative_path
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.validation import HttpUrl, describe, open_input, url_problem
from bulkforge.proto.text import json_problem
from bulkforge.proto.units import shown, size_text

COLUMNS = ("url", "path", "size", "sha256", "md5", "etag")
MAX_REPORTED_ERRORS = 10
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$", to_lower=True)]
Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{32}$", to_lower=True)]


class ManifestRow(BaseModel):
    """One file to fetch. Unknown columns are ignored; empty CSV cells count as absent."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    url: HttpUrl
    path: str | None = None
    size: Annotated[int, Field(ge=0)] | None = None
    sha256: Hex64 | None = None
    md5: Hex32 | None = None
    etag: str | None = None


@dataclass(slots=True)
class FileEntry:
    """A file to fetch with its destination path settled: a manifest row or a listed object.

    Built only from validated input (ManifestRow, ListedFile), so it checks nothing itself:
    a plain dataclass costs a tenth of a pydantic model per row of a million-row manifest.
    """

    url: str
    path: str
    size: int | None
    sha256: str | None
    md5: str | None
    etag: str | None
    # A sidecar holding the file's sha256 in `sha256sum` format (Binance's X.zip.CHECKSUM).
    checksum_url: str | None = None


class ListedFile(BaseModel):
    """An object of a listing (S3, Hugging Face), checked as a manifest row is."""

    url: str
    path: str
    size: Annotated[int, Field(ge=0)] | None
    sha256: Hex64 | None
    md5: Hex32 | None
    etag: str | None


def listed_entry(**fields: Any) -> FileEntry:
    """The entry of a listed object, validated (a listing is untrusted input too)."""
    try:
        listed = ListedFile.model_validate(fields)
    except ValidationError as exc:
        raise InvalidArgument(
            f"the listing has an entry bfd cannot take: {describe(exc)}"
        ) from None
    return FileEntry(**dict(listed))


def manifest_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise InvalidArgument(
            f"manifest {path}: unknown format {path.suffix!r}; use .jsonl, .csv or .parquet"
        ) from None


# The longest line of a JSONL or CSV manifest: a row is a URL, a path and a few checksums.
# A line is read up to this and no further, so a file of one endless line (a sparse file,
# /dev/zero's bytes) cannot take bfd's memory with it.
MAX_LINE_BYTES = 256 * 1024


def _lines(path: Path, handle: BinaryIO) -> Iterator[bytes]:
    """The file's lines (with their ends), each refused past MAX_LINE_BYTES."""
    number = 0
    while line := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise InvalidArgument(
                f"manifest {path}: line {number:,} is longer than {size_text(MAX_LINE_BYTES)}; "
                "a row is one URL with its path and checksums"
            )
        yield line


def _jsonl_rows(path: Path, handle: BinaryIO) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(_lines(path, handle), start=1):
        if line.strip():
            yield number, _JsonLine(line)


class _JsonLine:
    """A JSONL line, parsed and validated in one pass by pydantic (in Rust) in `_row`."""

    def __init__(self, text: bytes):
        self.text = text

    def decoded(self) -> Any:
        try:
            return json.loads(self.text.rstrip(b"\r\n"))  # a fault's column is in its row
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _Unreadable(json_problem(exc))
        except RecursionError:
            return _Unreadable("nested too deeply; a row is one object of columns")


def _csv_rows(path: Path, handle: BinaryIO) -> Iterator[tuple[int, Any]]:
    # Line by line (a quoted field may go on over the next), each decoded alone: a line
    # ends at b"\n", which never falls inside a UTF-8 character.
    reader = csv.DictReader(line.decode("utf-8") for line in _lines(path, handle))
    if not reader.fieldnames or "url" not in reader.fieldnames:
        raise InvalidArgument(f"manifest {path}: the CSV header has no 'url' column")
    for number, record in enumerate(reader, start=2):
        yield number, {key: value for key, value in record.items() if value not in ("", None)}


def _parquet_rows(path: Path, handle: BinaryIO) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa  # only a Parquet manifest needs Arrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
    except Exception as exc:
        raise InvalidArgument(f"manifest {path}: not a readable Parquet file ({exc})") from None
    names = set(parquet.schema_arrow.names)
    if "url" not in names:
        raise InvalidArgument(f"manifest {path}: the Parquet file has no 'url' column")
    number = 0
    try:
        for batch in parquet.iter_batches(columns=[c for c in COLUMNS if c in names]):
            for record in batch.to_pylist():
                number += 1
                yield number, {key: value for key, value in record.items() if value is not None}
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:  # a damaged page, bad UTF-8
        raise InvalidArgument(f"manifest {path}: not a readable Parquet file ({exc})") from None


class _Unreadable:
    def __init__(self, reason: str):
        self.reason = reason


READERS = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}


def _entry(record: Any) -> FileEntry:
    row = _row(record)
    path = safe_relative_path(row.path) if row.path is not None else path_from_url(str(row.url))
    return FileEntry(row.url, path, row.size, row.sha256, row.md5, row.etag)


def _row(record: Any) -> ManifestRow:
    if isinstance(record, _JsonLine):
        try:
            return ManifestRow.model_validate_json(record.text)
        except ValidationError:
            record = record.decoded()  # again, to say what is wrong as for any other format
    if isinstance(record, _Unreadable):
        raise InvalidArgument(record.reason)
    if not isinstance(record, dict):
        raise InvalidArgument("each row must be an object with at least a 'url'")
    try:
        return ManifestRow.model_validate(record)
    except ValidationError as exc:
        raise InvalidArgument(describe(exc, {"url": url_problem})) from None


def read_manifest(path: Path) -> Iterator[FileEntry]:
    """Every entry of the manifest; raises InvalidArgument naming up to 10 bad rows."""
    if not path.is_absolute():
        raise InvalidArgument(f"manifest path {str(path)!r} must be absolute")
    reader = READERS[manifest_format(path)]
    # Only a regular file is read: never a FIFO (it would hang), a device or a socket.
    with open_input(path, "manifest") as handle:
        yield from _entries(path, reader, handle)


def _entries(path: Path, reader, handle: BinaryIO) -> Iterator[FileEntry]:
    errors: list[str] = []
    count = 0
    try:
        for number, record in reader(path, handle):
            try:
                entry = _entry(record)
            except InvalidArgument as exc:
                errors.append(f"row {number}: {exc}")
                if len(errors) >= MAX_REPORTED_ERRORS:
                    break
                continue
            count += 1
            if not errors:
                yield entry
    except PermissionError:
        raise InvalidArgument(f"manifest {path}: bfd may not read it (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"manifest {path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:  # a field past csv's limit (128 KiB), a broken quote
        raise InvalidArgument(f"manifest {path}: not a CSV file bfd can read ({exc})") from None
    if errors:
        raise InvalidArgument(f"manifest {path}: " + "; ".join(errors))
    if count == 0:
        raise InvalidArgument(f"manifest {path}: no rows")


def entries_from_urls(urls: list[str]) -> Iterator[FileEntry]:
    if not urls:
        raise InvalidArgument("no URLs given")
    for number, url in enumerate(urls, start=1):
        try:
            yield _entry({"url": url})
        except InvalidArgument as exc:
            raise InvalidArgument(f"url {number} ({shown(url, 80)}): {exc}") from None
