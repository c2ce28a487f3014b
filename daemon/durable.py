"""Durable writes, the one way every pipeline makes bytes survive a crash.

A file is written under a temporary name, fsynced, renamed into place, and the
directory that gained the name is fsynced; only then may a row say the work is
done. Groups of files use one `syncfs()` per filesystem instead of an fsync each.
An fsync that fails, or a write the disk refuses (EIO, a filesystem turned read-only),
leaves what is on that disk unknown: `DiskFailed`. The work that met it is not done
nor failed: it goes back to pending, and every job writing to that disk is held
(daemon/diskholds.py) until the disk takes a write again or the operator resumes it.
A full disk (ENOSPC) is not a failed one: the disk threshold holds new work before it
fills, and a write that still meets it fails its item, to be retried.
"""

import contextlib
import ctypes
import errno
import os
from pathlib import Path

_LIBC = ctypes.CDLL(None, use_errno=True)
SYNCFS_CALL = getattr(_LIBC, "syncfs", None)


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        found = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return found >= (major, minor)


# syncfs only returns write-back errors since Linux 5.8; before that it cannot stand in
# for the per-file fsync that would report them.
SYNCFS_REPORTS_ERRORS = SYNCFS_CALL is not None and _kernel_at_least(5, 8)


class DiskFailed(Exception):
    """A data disk failed under a write or a sync: its jobs are held, nothing is failed.

    One message argument (naming the path and the error), so it crosses from a worker
    process to bfd intact.
    """


def disk_failed(exc: OSError) -> bool:
    """The disk itself failed (EIO), or its filesystem turned read-only after an error.

    Then a write fails for every file alike, as the sync after it would: the jobs there
    are held (DiskFailed) instead of failing item after item until the job has failed.
    """
    return exc.errno in (errno.EIO, errno.EROFS)


@contextlib.contextmanager
def disk_errors(where: Path | str):
    """Within: an OSError saying the disk failed becomes DiskFailed naming the path."""
    try:
        yield
    except OSError as exc:
        if not disk_failed(exc):
            raise
        raise DiskFailed(f"cannot write {exc.filename or where}: {exc.strerror}") from exc


def sync_files(paths: list[Path]) -> None:
    """Make written files durable: one syncfs per filesystem, else an fsync each."""
    if SYNCFS_REPORTS_ERRORS:
        sync_filesystems({path.parent for path in paths})
        return
    for path in paths:
        fsync_or_die(path)


def sync_directories(directories: set[Path]) -> None:
    """Make the entries of directories durable: a syncfs per filesystem, else an fsync each."""
    if SYNCFS_CALL is not None:
        sync_filesystems(directories)
        return
    for directory in directories:
        fsync_or_die(directory)


def sync_filesystems(directories: set[Path]) -> None:
    """One syncfs for each filesystem the directories are on."""
    assert SYNCFS_CALL is not None
    seen: set[int] = set()
    for directory in directories:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue  # its files fail on their own below, with their names
        try:
            device = os.fstat(fd).st_dev
            if device in seen:
                continue
            seen.add(device)
            if SYNCFS_CALL(fd) != 0:
                error = ctypes.get_errno()
                raise DiskFailed(f"cannot sync the filesystem of {directory}: {os.strerror(error)}")
        finally:
            os.close(fd)


def make_dirs(directory: Path, root: Path) -> None:
    """mkdir -p of directory below root, fsyncing each parent whose entries changed.

    root itself must exist already (a job's dest is never created here). OSError when
    a directory cannot be made; DiskFailed when an fsync fails or the disk refuses it.
    """
    missing = []
    walk = directory
    while walk != root and not walk.exists():
        missing.append(walk)
        walk = walk.parent
    for path in reversed(missing):
        try:
            with disk_errors(path):
                path.mkdir()
        except FileExistsError:
            continue
        fsync_or_die(path.parent)


def replace_durably(temporary: Path, final: Path) -> Path:
    """fsync a finished temporary file, then rename it over final (the caller fsyncs the dir)."""
    fsync_or_die(temporary)
    with disk_errors(final):
        os.replace(temporary, final)
    return final


def write_durably(path: Path, data: bytes) -> Path:
    """data under path by way of `.<name>.tmp`, fsynced before the rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    with disk_errors(temporary):
        temporary.write_bytes(data)
    return replace_durably(temporary, path)


PROBE_BYTES = 4096


def probe_disk(directory: Path | str) -> None:
    """Whether a disk takes writes again: a small file written, fsynced and removed.

    OSError when it does not (EIO, read-only, gone). Its name is bfd's pid, so two bfds
    never share one, and a probe a crash left behind is simply overwritten next time.
    """
    path = Path(directory) / f".bulkforge-probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_or_die(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes its entries durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DiskFailed(f"cannot fsync {path}: {exc}") from exc
