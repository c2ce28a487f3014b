"""Helpers shared by the store benches: where to put files, what disk that is, how to print."""

import json
import os
import platform
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import apsw

from bulkforge.daemon.downloader.manifest import FileEntry

REPO = Path(__file__).resolve().parents[1]


def default_dir() -> Path:
    """The system temp dir when it is on the same filesystem as the repo, else a dir beside it."""
    temp = Path(tempfile.gettempdir())
    if os.stat(temp).st_dev == os.stat(REPO).st_dev:
        return temp
    return REPO.parent


def filesystem(path: Path) -> dict:
    """Mount point, filesystem type and device of the mount holding path (from /proc/mounts)."""
    real = os.path.realpath(path)
    best = {"mount": "/", "fstype": "unknown", "device": "unknown"}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    longest = -1
    for line in lines:
        device, mount, fstype, *_ = line.split()
        mount = mount.replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > longest:
            longest = len(mount)
            best = {"mount": mount, "fstype": fstype, "device": device}
    return best


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def file_entries(count: int, size: int = 262_144, url: str = "http://127.0.0.1:9") -> Iterable:
    """`count` manifest rows, built without per-row validation (they are known good)."""
    for index in range(count):
        yield FileEntry(
            url=f"{url}/d{index % 1000:03d}/f{index:07d}.bin",
            path=f"d{index % 1000:03d}/f{index:07d}.bin",
            size=size,
            sha256=None,
            md5=None,
            etag=None,
        )


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def json_line(name: str, results: dict) -> str:
    return json.dumps({"bench": name, **results}, sort_keys=True)


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"
