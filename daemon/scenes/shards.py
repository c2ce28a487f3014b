"""Shards of a scenes job, img2dataset-style, written durably before their items are done.

A shard of N items is one of:
- `files`: a directory `NNNNN/` with `<key>.<ext>` and `<key>.json` per success;
- `webdataset`: a tar `NNNNN.tar` with the same members;
- `parquet`: the successes' bytes in a `data` column of `NNNNN.parquet`.

A sample's members are img2dataset's: `<key>.<ext>` (the bytes), `<key>.txt` (the
caption, when a kept column is named `caption`: `--caption` keeps the caption
column under that name) and `<key>.json` (its metadata: key, url, kept columns,
and what the steps added, e.g. `decode`'s width and height). A tar member carries
the time its item was fetched, as a `files` shard's file does.

Beside it, `NNNNN.parquet` (for files and webdataset; the parquet format carries
the same columns itself) indexes every item of the shard, successes and
failures: key, the kept columns, status, step, error class, error, size, sha256,
and the image size columns when `decode` ran.
And `_stats/NNNNN.json` counts them (successes, failures by step, duration): under
an underscored directory, which Parquet readers of the dest (pyarrow, pandas,
Spark) skip, so a `parquet` dest is a dataset they read whole. An older bfd's
`NNNNN_stats.json` beside the shard is removed when the shard is written again.

Items are streamed into temporary names as they finish, so a shard never sits
in memory whole. `finish` syncs them, renames them into place and syncs the
directory: only after it returns may the caller commit the shard's items `done`.
A shard written again (after a crash before that commit) starts from nothing
and replaces the old one whole.

A sample's name is the item's key made safe: letters, digits, `_` and `-` only
(webdataset groups a sample's members by the name before the first dot), else a
cleaned form plus a digest of the key, so two keys never collide.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bulkforge.daemon.durable import (
    DiskFailed,
    disk_errors,
    fsync_or_die,
    make_dirs,
    replace_durably,
    sync_files,
    write_durably,
)
from bulkforge.daemon.scenes.request import CAPTION

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

FORMATS = ("files", "webdataset", "parquet")
STATS_DIR = "_stats"
# Where an older bfd kept a shard's stats: in the dataset, under a name readers try to read.
LEGACY_STATS_SUFFIX = "_stats.json"
# The index's own columns; a kept column of one of these names is indexed as input_<name>.
RESERVED = ("key", "status", "step", "error_class", "error", "size", "sha256", "data")
SUCCESS, FAILED = "success", "failed"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(key: str) -> str:
    """The key as a sample name: itself when safe, else a cleaned form plus a digest."""
    if _SAFE.fullmatch(key):
        return key
    cleaned = _UNSAFE_CHARS.sub("_", key)[:150].lstrip("_-") or "item"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{cleaned}-{digest}"


@dataclass
class Outcome:
    """How one item of the shard ended: its bytes, or the step and error that failed it."""

    key: str
    kept: dict[str, Any]
    status: str
    data: bytes | None = None
    extension: str = "bin"
    step: str | None = None
    error_class: str | None = None
    error: str | None = None
    # The sample's metadata as the steps left it; None: the key and the kept columns.
    meta: dict[str, Any] | None = None
    # When its bytes were fetched (seconds since the epoch): its members' mtime.
    fetched_at: float | None = None


@dataclass(frozen=True)
class Written:
    successes: int
    failures: int
    bytes: int


@dataclass
class ShardWriter:
    """One shard being written; `add` streams outcomes in, `finish` makes it durable."""

    dest: Path
    index: int
    format: str
    # The kept columns of the index; none when None.
    kept: "pa.Schema | None" = None
    # Integer fields the steps add to every success's metadata, indexed too
    # (steps.IMAGE_SIZE when `decode` runs).
    measured: tuple[str, ...] = ()
    _rows: list[dict] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)
    _tar: tarfile.TarFile | None = None
    _folder_files: list[Path] = field(default_factory=list)
    _parquet: "pq.ParquetWriter | None" = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown shard format {self.format!r}")
        if self.kept is None:
            import pyarrow as pa

            self.kept = pa.schema([])
        with disk_errors(self.dest):  # a failed disk holds the job: it fails no item
            self._open()

    def _open(self) -> None:
        self.dest.mkdir(parents=True, exist_ok=True)
        self.abandon()  # what an interrupted write of this shard left
        if self.format == "webdataset":
            # Open across add() calls and closed by finish(): no `with` can span that.
            self._tar = tarfile.open(  # noqa: SIM115
                self._temporary(f"{self.name}.tar"), "w", format=tarfile.GNU_FORMAT
            )
        elif self.format == "files":
            self._temporary(self.name).mkdir()
        else:
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(
                self._temporary(f"{self.name}.parquet"), self._schema()
            )

    @property
    def name(self) -> str:
        return f"{self.index:05d}"

    def _temporary(self, name: str) -> Path:
        return self.dest / f".{name}.tmp"

    def add(self, outcomes: list[Outcome]) -> None:
        """Write the successes' bytes and remember every outcome for the index."""
        with disk_errors(self.dest):
            self._add(outcomes)

    def _add(self, outcomes: list[Outcome]) -> None:
        rows = [self._index_row(outcome) for outcome in outcomes]
        if self._tar is not None:
            for outcome in outcomes:
                self._add_members(outcome, self._add_to_tar)
        elif self._parquet is not None:
            import pyarrow as pa

            for row, outcome in zip(rows, outcomes, strict=True):
                row["data"] = outcome.data
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=self._schema()))
            for row in rows:
                del row["data"]
        else:
            for outcome in outcomes:
                self._add_members(outcome, self._add_to_folder)
        self._rows.extend(rows)

    def finish(self) -> Written:
        """Sync, rename into place, write the index and stats; returns what was written."""
        with disk_errors(self.dest):
            return self._finish()

    def _finish(self) -> Written:
        self._finish_data()
        if self.format != "parquet":
            write_durably(self.dest / f"{self.name}.parquet", self._index_bytes())
        stats = self.dest / STATS_DIR
        make_dirs(stats, self.dest)
        write_durably(stats / f"{self.name}.json", self._stats_bytes())
        fsync_or_die(stats)
        with contextlib.suppress(FileNotFoundError):
            (self.dest / f"{self.name}{LEGACY_STATS_SUFFIX}").unlink()
        fsync_or_die(self.dest)
        successes = sum(row["status"] == SUCCESS for row in self._rows)
        size = sum(row["size"] or 0 for row in self._rows)
        return Written(successes, len(self._rows) - successes, size)

    def close_and_abandon(self) -> None:
        """Give the shard up (its items were interrupted): nothing of it stays.

        On a failed disk nothing can be removed; the next writer of the shard removes it.
        """
        with contextlib.suppress(DiskFailed), disk_errors(self.dest):
            if self._tar is not None:
                self._tar.close()
            if self._parquet is not None:
                self._parquet.close()
            self.abandon()

    def abandon(self) -> None:
        """Remove the temporary names of this shard (a crash or a cancel left them)."""
        names = (self.name, f"{self.name}.tar", f"{self.name}.parquet")
        temporaries = [self._temporary(name) for name in names]
        temporaries.append(self.dest / STATS_DIR / f".{self.name}.json.tmp")
        for temporary in temporaries:
            if temporary.is_dir():
                shutil.rmtree(temporary)
            elif temporary.exists():
                temporary.unlink()

    # -- the pieces ----------------------------------------------------------------------------

    def _index_row(self, outcome: Outcome) -> dict:
        data = outcome.data
        row = {"key": outcome.key}
        row |= {self._indexed(name): outcome.kept.get(name) for name in self.kept.names}
        row |= {
            "status": outcome.status,
            "step": outcome.step,
            "error_class": outcome.error_class,
            "error": outcome.error,
            "size": len(data) if data is not None else None,
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        }
        meta = outcome.meta if isinstance(outcome.meta, dict) else {}
        row |= {name: _integer(meta.get(name)) for name in self.measured}
        return row

    def _indexed(self, name: str) -> str:
        """A kept column's name in the index: prefixed when the index has one of its own."""
        return f"input_{name}" if name in RESERVED or name in self.measured else name

    def _schema(self) -> "pa.Schema":
        import pyarrow as pa

        fields = [pa.field("key", pa.string())]
        fields += [pa.field(self._indexed(kept.name), kept.type) for kept in self.kept]
        fields += [pa.field(name, pa.string()) for name in ("status", "step", "error_class")]
        fields += [pa.field("error", pa.string()), pa.field("size", pa.int64())]
        fields.append(pa.field("sha256", pa.string()))
        fields += [pa.field(name, pa.int64()) for name in self.measured]
        if self.format == "parquet":
            fields.append(pa.field("data", pa.binary()))
        return pa.schema(fields)

    @property
    def captioned(self) -> bool:
        return CAPTION in self.kept.names

    def _add_members(self, outcome: Outcome, write) -> None:
        if outcome.status != SUCCESS or outcome.data is None:
            return
        base = safe_name(outcome.key)
        fetched_at = outcome.fetched_at if outcome.fetched_at is not None else time.time()
        extension = outcome.extension
        if self.captioned and extension == "txt":  # `<key>.txt` is the caption
            extension = "bin"
        write(f"{base}.{extension}", outcome.data, fetched_at)
        if self.captioned:
            write(f"{base}.txt", _caption(outcome), fetched_at)
        write(f"{base}.json", _meta_json(outcome), fetched_at)

    def _add_to_tar(self, name: str, data: bytes, mtime: float) -> None:
        assert self._tar is not None
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = int(mtime)
        self._tar.addfile(info, io.BytesIO(data))  # BytesIO shares, not copies

    def _add_to_folder(self, name: str, data: bytes, mtime: float) -> None:
        path = self._temporary(self.name) / name
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        self._folder_files.append(path)

    def _finish_data(self) -> Path:
        if self._tar is not None:
            self._tar.close()
            return self._rename(f"{self.name}.tar")
        if self._parquet is not None:
            self._parquet.close()
            return self._rename(f"{self.name}.parquet")
        sync_files(self._folder_files)
        fsync_or_die(self._temporary(self.name))
        final = self.dest / self.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(self._temporary(self.name), final)
        return final

    def _rename(self, name: str) -> Path:
        return replace_durably(self._temporary(name), self.dest / name)

    def _index_bytes(self) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(self._rows, schema=self._schema()), buffer)
        return buffer.getvalue().to_pybytes()

    def _stats_bytes(self) -> bytes:
        failures: dict[str, int] = {}
        for row in self._rows:
            if row["status"] == FAILED:
                failures[row["step"] or "?"] = failures.get(row["step"] or "?", 0) + 1
        stats = {
            "shard": self.index,
            "count": len(self._rows),
            "successes": len(self._rows) - sum(failures.values()),
            "failures": sum(failures.values()),
            "failures_by_step": dict(sorted(failures.items())),
            "bytes": sum(row["size"] or 0 for row in self._rows),
            "duration_s": round(time.monotonic() - self._started, 3),
        }
        return json.dumps(stats, indent=2).encode()


def _integer(value: Any) -> int | None:
    """A measured field as the index holds it: an int, else null (a plug-in's odd value)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _caption(outcome: Outcome) -> bytes:
    """The sample's caption as text: the steps' when they set one, else the kept column's;
    empty when null (as img2dataset writes it)."""
    meta = outcome.meta if isinstance(outcome.meta, dict) else {}
    value = meta.get(CAPTION, outcome.kept.get(CAPTION))
    return b"" if value is None else str(value).encode()


def _meta_json(outcome: Outcome) -> bytes:
    """The sample's metadata as JSON; what the steps left that is not JSON is dropped."""
    plain = {"key": outcome.key, **outcome.kept}
    try:
        meta = outcome.meta if isinstance(outcome.meta, dict) else plain
        return json.dumps(meta, default=str, allow_nan=False).encode()
    except (TypeError, ValueError):  # a cycle, NaN, keys that are not strings
        return json.dumps(plain, default=str).encode()
