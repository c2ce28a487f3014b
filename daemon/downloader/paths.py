"""Remote names are untrusted: turn them into paths that cannot leave the destination."""

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.proto.units import shown

PARTIAL_SUFFIX = ".partial"
# A name must leave room for its partial's suffix within the filesystem's 255 bytes.
MAX_COMPONENT_BYTES = 255 - len(PARTIAL_SUFFIX)
MAX_PATH_BYTES = 4096

# Plain components (letters, digits, '.', '_', '-'; none starting with '.'), each at most
# MAX_COMPONENT_BYTES: the names of nearly every manifest row. Such a path has nothing to
# unquote, normalise or refuse but a .partial suffix, so it skips the general checks (and
# urlsplit), which cost most of the time of reading a million-row manifest.
_COMPONENT = rf"[A-Za-z0-9_\-][A-Za-z0-9._\-]{{0,{MAX_COMPONENT_BYTES - 1}}}"
_PLAIN_PATH = re.compile(rf"(?:{_COMPONENT}/){{0,64}}{_COMPONENT}")
_PLAIN_URL = re.compile(
    rf"https?://[^/?#\s]+/((?:{_COMPONENT}/){{0,64}}{_COMPONENT})(?:[?#].*)?", re.S
)


def safe_relative_path(raw: str) -> str:
    """The normalised relative form of `raw`, or InvalidArgument saying why it is refused."""
    if _is_plain(raw) and _PLAIN_PATH.fullmatch(raw):
        return raw
    quoted = shown(raw, 100)  # a refusal echoes a short prefix, never a whole long path
    if not raw or not raw.strip():
        raise InvalidArgument("empty path")
    if "\x00" in raw:
        raise InvalidArgument(f"path {quoted} contains a NUL byte")
    if "\\" in raw:
        raise InvalidArgument(f"path {quoted} contains a backslash; use '/' between directories")
    if raw.startswith("/"):
        raise InvalidArgument(f"path {quoted} is absolute; paths must be relative to dest")
    # A plain split (PurePosixPath costs 3x as much, per row of a million-row manifest):
    # empty parts are repeated slashes, "." means here; both vanish, as in a POSIX path.
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"path {quoted} escapes the destination ('..')")
    if not parts:
        raise InvalidArgument(f"path {quoted} names no file")
    for part in parts:
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise InvalidArgument(
                f"path {quoted} has a name longer than {MAX_COMPONENT_BYTES} bytes "
                f"(255 less room for {PARTIAL_SUFFIX})"
            )
    normal = "/".join(parts)
    if len(normal.encode()) > MAX_PATH_BYTES:
        raise InvalidArgument(f"path {quoted} is longer than 4096 bytes")
    if normal.endswith(PARTIAL_SUFFIX):
        raise InvalidArgument(
            f"path {quoted} ends in {PARTIAL_SUFFIX}, which bfd uses for transfers"
        )
    return normal


def _is_plain(path: str) -> bool:
    """What the plain patterns leave to check: the length, and bfd's own suffix."""
    return len(path) <= MAX_PATH_BYTES and not path.endswith(PARTIAL_SUFFIX)


def path_from_url(url: str) -> str:
    """The URL's path, unquoted, as a relative path: http://h/a/b%20c.zip -> a/b c.zip."""
    plain = _PLAIN_URL.fullmatch(url)
    if plain and _is_plain(plain[1]):
        return plain[1]
    remote = unquote(urlsplit(url).path).lstrip("/")
    if not remote or remote.endswith("/"):
        raise InvalidArgument(f"cannot name a file after {shown(url, 100)}: give it a path")
    return safe_relative_path(remote)


def resolve_inside(dest: Path, relative: str) -> Path:
    """dest/relative, refusing it when symlinks on disk would carry it outside dest."""
    target = dest / relative
    real_dest = real_path(dest)
    real_parent = real_path(target.parent)
    if os.path.commonpath([real_dest, real_parent]) != real_dest:
        quoted = shown(relative, 100)
        raise InvalidArgument(f"{quoted} resolves outside {dest} (a symlink on disk?)")
    return target


def real_path(path: Path) -> str:
    """os.path.realpath, asked of the kernel for a directory that exists.

    realpath walks the path in Python, an lstat per component while holding the GIL: for
    every file of a download, it was the daemon's largest use of Python time. Opening the
    directory (O_PATH) and reading back the name of its descriptor resolves it in three
    system calls. Anything else (not there yet, no /proc) takes the general walk.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return os.path.realpath(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX)


def has_size(path: Path | str, size: int) -> bool:
    """True when path is a file of exactly `size` bytes."""
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False
