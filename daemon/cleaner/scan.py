"""Finding a clean job's zips: under an --input directory, or among a download's verified files.

Paths are untrusted: each is parsed against the Binance layout, and one that does
not fit is counted (the first one named, with why) rather than guessed at. Zips
of a kind or market the job leaves out are counted as filtered.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bulkforge.daemon.cleaner.layout import NotInLayout, ZipSource, parse_path


@dataclass(frozen=True)
class Found:
    # Relative to the layout root, "/"-separated.
    path: str
    root: str
    source: ZipSource
    size: int
    mtime_ns: int
    # Known when a download verified it (a checksum sidecar, or the listing's).
    sha256: str | None = None


@dataclass
class Scan:
    zips: list[Found] = field(default_factory=list)
    outside: int = 0
    first_outside: str = ""
    filtered: int = 0
    # The highest download file id looked at (--after).
    seen_file_id: int = 0

    def consider(self, path: str, root: str, wants, sha256: str | None = None) -> None:
        """Add the zip at root/path if it is in the layout and wanted; else count it."""
        try:
            source = parse_path(path)
        except NotInLayout as outside:
            self.outside += 1
            self.first_outside = self.first_outside or str(outside)
            return
        if not wants(source.market, source.kind):
            self.filtered += 1
            return
        try:  # a symlink's target (stat never waits, not even on a FIFO): judged by the worker
            status = _stat(Path(root) / path)
        except OSError:
            return  # gone between listing and stat; a later scan sees what is there
        self.zips.append(Found(path, root, source, status.st_size, status.st_mtime_ns, sha256))


def _stat(path: Path) -> os.stat_result:
    """What path leads to; a dangling symlink itself (the worker fails it, `missing`)."""
    try:
        return path.stat()
    except FileNotFoundError:
        return path.lstat()


def scan_directory(root: Path, wants) -> Scan:
    """Every *.zip below root (symlinked directories not followed), in path order.

    Whatever a *.zip name is (a symlink, a FIFO, a device, a socket, a directory) it is
    registered: the worker reads only a regular file inside root, and fails any other
    zip at `open` with its reason, where `bfctl failures` shows it.
    """
    scan = Scan()
    for directory, subdirectories, names in os.walk(root):
        subdirectories.sort()
        for name in sorted(names + [d for d in subdirectories if d.endswith(".zip")]):
            if name.endswith(".zip") and not name.startswith("."):
                relative = (Path(directory) / name).relative_to(root).as_posix()
                scan.consider(relative, str(root), wants)
    return scan


def scan_files(files: Iterable[tuple[int, str, str, str | None]], wants) -> Scan:
    """A download's verified files: (file id, dest, path relative to it, sha256)."""
    scan = Scan()
    for file_id, dest, path, sha256 in files:
        scan.seen_file_id = max(scan.seen_file_id, file_id)
        if path.endswith(".zip"):
            scan.consider(path, dest, wants, sha256)
    return scan
