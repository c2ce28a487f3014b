"""Opening an input file safely: the one rule for every path bfd (or bfctl) reads from.

Only a regular file is read. A symlink is resolved, and where the input has a root
(a clean job's input tree, a scenes input directory) it must stay inside it. A FIFO
(opening one waits for a writer), a device (/dev/zero never ends), a socket or a
directory is refused by reason, before it is opened; the open itself does not follow
a symlink swapped in meanwhile (O_NOFOLLOW on the resolved path) nor wait (O_NONBLOCK),
and what was opened is checked again (fstat). A size bound refuses a larger file.

Standard library only: bfctl (a spec file) and bfd (manifests, scenes inputs, clean
zips, in the daemon and in its workers) share it.
"""

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

# Reason -> what the path is, in words.
KINDS = {
    "fifo": "a FIFO (named pipe)",
    "socket": "a socket",
    "char_device": "a character device",
    "block_device": "a block device",
    "directory": "a directory",
    "not_regular": "not a regular file",
}


class UnsafeInput(ValueError):
    """A path that is not read, and why: `reason` is one word (a failure's error class)."""

    def __init__(self, path: Path | str, reason: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.reason = reason
        self.why = message


def kind_of(mode: int) -> str | None:
    """The reason a file of this mode is refused; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "char_device"
    if stat.S_ISBLK(mode):
        return "block_device"
    if stat.S_ISDIR(mode):
        return "directory"
    return "not_regular"


def resolve(path: Path | str, root: Path | str | None = None) -> Path:
    """path with every symlink resolved; refused when it leaves root (if any) or is missing."""
    real = Path(os.path.realpath(path))
    if root is not None:
        top = Path(os.path.realpath(root))
        if real != top and top not in real.parents:
            raise UnsafeInput(
                path, "outside_root", f"leads out of the input root {root} (to {real}); not read"
            )
    return real


def check_regular(path: Path | str, root: Path | str | None = None) -> None:
    """Refuse (UnsafeInput) what open_regular would, without opening it: for a client that
    checks a path another process (bfd) reads. FileNotFoundError if it is not there."""
    _refuse_unless_regular(path, os.stat(resolve(path, root)).st_mode)


def open_regular(
    path: Path | str, root: Path | str | None = None, max_bytes: int | None = None
) -> BinaryIO:
    """path opened for reading if it is (or a symlink inside root leads to) a regular file
    of at most max_bytes; UnsafeInput saying why not, FileNotFoundError if it is not there."""
    real = resolve(path, root)
    try:
        _refuse_unless_regular(path, os.stat(real).st_mode)
        descriptor = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeInput(path, "symlink", "became a symlink as it was opened") from None
        if exc.errno == errno.ENXIO:  # a socket or a FIFO with no writer swapped in
            raise UnsafeInput(path, "not_regular", "is not a regular file") from None
        raise
    try:
        status = os.fstat(descriptor)
        _refuse_unless_regular(path, status.st_mode)
        if max_bytes is not None and status.st_size > max_bytes:
            raise UnsafeInput(
                path, "too_large", f"{status.st_size:,} bytes, more than the {max_bytes:,} allowed"
            )
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _refuse_unless_regular(path: Path | str, mode: int) -> None:
    reason = kind_of(mode)
    if reason is not None:
        raise UnsafeInput(path, reason, f"is {KINDS[reason]}, not a regular file; not read")


def read_regular(path: Path | str, max_bytes: int, root: Path | str | None = None) -> bytes:
    """A whole regular file of at most max_bytes (checked again as it is read)."""
    with open_regular(path, root, max_bytes) as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeInput(path, "too_large", f"more than the {max_bytes:,} bytes allowed")
    return data
