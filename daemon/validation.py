"""Turn pydantic's validation errors into one line a person can act on; the names and
URLs every kind accepts; the one way an input file named by a request is opened."""

import re
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import StringConstraints

from bulkforge.daemon import errors
from bulkforge.daemon.worded import PATTERNS, Explain, describe
from bulkforge.proto import units
from bulkforge.proto.inputs import UnsafeInput, open_regular, read_regular, resolve

__all__ = [
    "Explain",
    "UnsafeInput",
    "describe",
    "open_input",
    "open_regular",
    "read_regular",
    "resolve",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JobName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

# A URL the transfer workers can fetch: http(s), printable ASCII only — no spaces, control
# characters (a raw NUL, a tab) or other letters (é), which must be percent-encoded, since
# libcurl takes nothing else — and a host part without / ? or #.
URL_PATTERN = r"^[hH][tT][tT][pP][sS]?://[\x21\x22\x24-\x2e\x30-\x3e\x40-\x7e]+[\x21-\x7e]*$"
MAX_URL_CHARS = 8192
HttpUrl = Annotated[str, StringConstraints(pattern=URL_PATTERN, max_length=MAX_URL_CHARS)]
_FETCHABLE = re.compile(URL_PATTERN)
PATTERNS[NAME_PATTERN] = (
    "a job name is 1 to 128 letters, digits, '.', '_' or '-', beginning with a letter or a digit"
)
PATTERNS[URL_PATTERN] = "give http://HOST/PATH or https://HOST/PATH in printable ASCII"


def url_problem(url: object) -> str | None:
    """What is wrong with a URL the workers cannot fetch, in words an operator can act on;
    None when they can."""
    text = str(url)
    if _FETCHABLE.match(text) and len(text) <= MAX_URL_CHARS:
        return None
    scheme, sep, rest = text.partition("://")
    if not sep:
        return f"{units.shown(text, 80)} is not a URL; give http://HOST/PATH or https://HOST/PATH"
    if scheme.lower() not in ("http", "https"):
        return f"only http and https URLs can be fetched, not {scheme[:20]}://"
    if any(char.isspace() or ord(char) < 0x20 or char == "\x7f" for char in text):
        return "a URL may not hold spaces or control characters (encode a space as %20)"
    if not text.isascii():
        return "a URL must be ASCII: percent-encode other characters (é as %C3%A9)"
    if not rest or rest[0] in "/?#":
        return f"{units.shown(text, 80)} names no host"
    if len(text) > MAX_URL_CHARS:
        return f"a URL of {len(text):,} characters is longer than {MAX_URL_CHARS:,}"
    return f"{units.shown(text, 80)} is not a URL bfd can fetch"


def parse_size(value: str, flag: str) -> int:
    try:
        return units.parse_size(value)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{flag}: {exc}") from None


def open_input(
    path: Path, what: str, root: Path | None = None, max_bytes: int | None = None
) -> BinaryIO:
    """An input file a request names (`what`: the flag), opened by the one rule of
    proto/inputs.py: a regular file (inside root, if given), never a FIFO, a device,
    a socket or a directory. InvalidArgument naming the path and why not."""
    try:
        return open_regular(path, root, max_bytes)
    except UnsafeInput as exc:
        raise errors.InvalidArgument(f"{what} {exc}") from None
    except FileNotFoundError:
        raise errors.InvalidArgument(
            f"{what} {path}: no such file (bfd reads it on its own node)"
        ) from None
    except PermissionError:
        raise errors.InvalidArgument(
            f"{what} {path}: bfd may not read it (permission denied)"
        ) from None
    except OSError as exc:
        raise errors.InvalidArgument(
            f"{what} {path}: cannot be read ({exc.strerror or exc})"
        ) from None
