"""Shards of a scenes job, img2dataset-style, written durably before their items are done.

A shard of N items is one of:
- `files`: a directory `NNNNN/` with `<key>.<ext>` and `<key>.json` per success;
- `webdataset`: a tar `NNNNN.tar` with the same members, in item order;
- `parquet`: the successes' bytes in a `data` column of `NNNNN.parquet`.

Beside it, `NNNNN.parquet` (for files and webdataset; the parquet format carries
the same columns itself) indexes every item of the shard, successes and
failures: key, the kept columns, status, step, error, size, sha256. And
`NNNNN_stats.json` counts them (successes, failures by step, duration).

Everything is written under a temporary name, fsynced, renamed, and the
directory fsynced, before `finish` returns: only then may the caller commit the
shard's items `done`. Rewriting a shard (after a crash before that commit)
replaces it whole. A key that is not a safe file name is made one (unsafe
characters replaced, a digest of the key appended so two keys never collide).
"""

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
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("files", "webdataset", "parquet")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(key: str) -> str:
    """The key as a file name: itself when safe, else a cleaned form plus a digest."""
    if _SAFE.fullmatch(key) and ".." not in key:
        return key
    cleaned = _UNSAFE_CHARS.sub("_", key)[:150].lstrip("._") or "item"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{cleaned}-{digest}"


@dataclass
class _Item:
    key: str
    kept: dict[str, Any]
    status: str
    step: str | None = None
    error: str | None = None
    data: bytes | None = None
    extension: str = ""


@dataclass
class Shard:
    """One shard being assembled in memory; `finish` writes it durably."""

    dest: Path
    index: int
    format: str
    kept_columns: tuple[str, ...] = ()
    items: list[_Item] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown shard format {self.format!r}")

    @property
    def name(self) -> str:
        return f"{self.index:05d}"

    def add_success(self, key: str, data: bytes, kept: dict, extension: str = "bin") -> None:
        self.items.append(_Item(key, kept, "success", data=data, extension=extension))

    def add_failure(self, key: str, kept: dict, step: str, error: str) -> None:
        self.items.append(_Item(key, kept, "failed", step=step, error=error))

    def finish(self) -> list[Path]:
        """Write the shard, its index and its stats durably; returns the paths written."""
        self.dest.mkdir(parents=True, exist_ok=True)
        written = []
        if self.format == "files":
            written.append(self._write_directory())
        elif self.format == "webdataset":
            written.append(_durable_file(self.dest / f"{self.name}.tar", self._tar_bytes()))
        written.append(self._write_index())
        written.append(_durable_file(self.dest / f"{self.name}_stats.json", self._stats_bytes()))
        _fsync_dir(self.dest)
        return written

    # -- the pieces ----------------------------------------------------------------------------

    def _members(self) -> list[tuple[str, bytes]]:
        members = []
        for item in self.items:
            if item.status != "success":
                continue
            assert item.data is not None
            base = safe_name(item.key)
            members.append((f"{base}.{item.extension}", item.data))
            meta = {"key": item.key, **item.kept}
            members.append((f"{base}.json", json.dumps(meta, default=str).encode()))
        return members

    def _tar_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in self._members():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0  # the same items make the same bytes
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def _write_directory(self) -> Path:
        final = self.dest / self.name
        temporary = self.dest / f".{self.name}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        for name, data in self._members():
            with (temporary / name).open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(temporary)
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        return final

    def _index_table(self) -> pa.Table:
        columns: dict[str, list] = {"key": [i.key for i in self.items]}
        for name in self.kept_columns:
            columns[name] = [i.kept.get(name) for i in self.items]
        columns["status"] = [i.status for i in self.items]
        columns["step"] = [i.step for i in self.items]
        columns["error"] = [i.error for i in self.items]
        columns["size"] = [len(i.data) if i.data is not None else None for i in self.items]
        columns["sha256"] = [
            hashlib.sha256(i.data).hexdigest() if i.data is not None else None for i in self.items
        ]
        if self.format == "parquet":
            columns["data"] = [i.data for i in self.items]
        types = {"size": pa.int64(), "step": pa.string(), "error": pa.string()}
        types |= {"sha256": pa.string(), "data": pa.binary()}
        return pa.table({k: pa.array(v, type=types.get(k)) for k, v in columns.items()})

    def _write_index(self) -> Path:
        buffer = pa.BufferOutputStream()
        pq.write_table(self._index_table(), buffer)
        return _durable_file(self.dest / f"{self.name}.parquet", buffer.getvalue().to_pybytes())

    def _stats_bytes(self) -> bytes:
        failures: dict[str, int] = {}
        for item in self.items:
            if item.status == "failed":
                failures[item.step or "?"] = failures.get(item.step or "?", 0) + 1
        stats = {
            "shard": self.index,
            "count": len(self.items),
            "successes": sum(i.status == "success" for i in self.items),
            "failures": sum(failures.values()),
            "failures_by_step": dict(sorted(failures.items())),
            "duration_s": round(time.monotonic() - self.started, 3),
        }
        return json.dumps(stats, indent=2).encode()


def _durable_file(path: Path, data: bytes) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
