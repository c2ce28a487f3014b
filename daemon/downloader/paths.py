"""Remote names are untrusted: turn them into paths that cannot leave the destination."""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bulkforge.daemon.errors import InvalidArgument

PARTIAL_SUFFIX = ".partial"
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096


def safe_relative_path(raw: str) -> str:
    """The normalised relative form of `raw`, or InvalidArgument saying why it is refused."""
    if not raw or not raw.strip():
        raise InvalidArgument("empty path")
    if "\x00" in raw:
        raise InvalidArgument(f"path {raw!r} contains a NUL byte")
    if "\\" in raw:
        raise InvalidArgument(f"path {raw!r} contains a backslash; use '/' between directories")
    if raw.startswith("/"):
        raise InvalidArgument(f"path {raw!r} is absolute; paths must be relative to --dest")
    # A plain split (PurePosixPath costs 3x as much, per row of a million-row manifest):
    # empty parts are repeated slashes, "." means here; both vanish, as in a POSIX path.
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"path {raw!r} escapes the destination ('..')")
    if not parts:
        raise InvalidArgument(f"path {raw!r} names no file")
    for part in parts:
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise InvalidArgument(f"path {raw!r} has a component longer than 255 bytes")
    normal = "/".join(parts)
    if len(normal.encode()) > MAX_PATH_BYTES:
        raise InvalidArgument(f"path {raw!r} is longer than 4096 bytes")
    if normal.endswith(PARTIAL_SUFFIX):
        raise InvalidArgument(
            f"path {raw!r} ends in {PARTIAL_SUFFIX}, which bfd uses for transfers"
        )
    return normal


def path_from_url(url: str) -> str:
    """The URL's path, unquoted, as a relative path: http://h/a/b%20c.zip -> a/b c.zip."""
    remote = unquote(urlsplit(url).path).lstrip("/")
    if not remote or remote.endswith("/"):
        raise InvalidArgument(f"cannot name a file after {url!r}: give it a path")
    return safe_relative_path(remote)


def resolve_inside(dest: Path, relative: str) -> Path:
    """dest/relative, refusing it when symlinks on disk would carry it outside dest."""
    target = dest / relative
    real_dest = os.path.realpath(dest)
    real_parent = os.path.realpath(target.parent)
    if os.path.commonpath([real_dest, real_parent]) != real_dest:
        raise InvalidArgument(f"{relative!r} resolves outside {dest} (a symlink on disk?)")
    return target


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX)


def has_size(path: Path | str, size: int) -> bool:
    """True when path is a file of exactly `size` bytes."""
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False
