"""What bfd and a transfer worker say to each other, and how it travels.

bfd sends an `Order` (a URL and the sink its body goes to); the worker answers
with `Progress` while bytes arrive and one `Answer` at the end. Messages are
pickled and length-prefixed over a unix socketpair: both ends are our own code,
started by bfd itself. This module is imported by the worker, so it stays light
(standard library only).
"""

import pickle
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

_LENGTH = struct.Struct("!I")


class Miss(NamedTuple):
    """A failed transfer, as `failures.Failure` records it (built in bfd from these fields)."""

    step: str
    error_class: str
    message: str
    retryable: bool = True
    after: float | None = None


@dataclass(frozen=True)
class ToMemory:
    """The whole body in the answer: answered 200, at most max_size bytes."""

    max_size: int


@dataclass(frozen=True)
class ToFile:
    """The body streamed into path, resuming after `offset` bytes already there.

    A 206 from `offset` continues the file, a 200 rewrites it from the start; any
    other answer leaves the file alone. `checksum` (sha256 or md5) is computed over
    the whole file while the bytes arrive. `size` is the whole file's size when
    known; `html_ok` says an HTML answer may be the file itself.
    """

    path: str
    offset: int
    checksum: str | None
    size: int | None
    html_ok: bool
    # The job's dest: the partial's missing directories below it are made once the origin
    # answers with the file (a 404 leaves none behind).
    root: str = ""


@dataclass(frozen=True)
class ToRange:
    """The body of a 206 for bytes [start, stop) written in place, fsynced before the answer."""

    path: str
    start: int
    stop: int


Sink = ToMemory | ToFile | ToRange


@dataclass(frozen=True)
class Order:
    id: int
    url: str
    headers: dict[str, str]
    sink: Sink
    # The whole exchange's limit in seconds (None: only the connect and read timeouts).
    timeout_s: float | None = None


# What a worker's refusal of the origin's answer means, beside a Miss.
RESTART = "restart"  # ToFile: the origin will not continue the partial; start it over
RANGES_REFUSED = "ranges_refused"  # ToRange: no 206 for this range of this version


@dataclass(frozen=True)
class Answer:
    id: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    # Bytes in the sink: the whole file for ToFile, the range's for ToRange.
    size: int = 0
    digest: str | None = None
    # ToFile: the sha256 of the whole file, whatever checksum the order asked for.
    sha256: str | None = None
    data: bytes | None = None
    miss: Miss | None = None
    refused: str | None = None
    # Why the bytes cannot be trusted on disk (a failed fsync): bfd stops.
    fatal: str | None = None


@dataclass(frozen=True)
class Progress:
    """Bytes in each order's sink now, by order id (sent a few times a second)."""

    sizes: dict[int, int]


@dataclass(frozen=True)
class Head:
    """The origin's validator for an order, as soon as its headers are in (for resuming)."""

    id: int
    validator: str | None


@dataclass(frozen=True)
class Cancel:
    id: int


@dataclass(frozen=True)
class Pool:
    """How many idle connections the worker may keep (its share of the global limit)."""

    idle: int


def frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def unframe(buffer: bytearray) -> list[object]:
    """The whole messages at the front of buffer, removed from it."""
    messages, position = [], 0
    while len(buffer) - position >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(buffer, position)
        end = position + _LENGTH.size + length
        if len(buffer) < end:
            break
        messages.append(pickle.loads(buffer[position + _LENGTH.size : end]))
        position = end
    del buffer[:position]
    return messages


HEADER_SIZE = _LENGTH.size


def length_of(header: bytes) -> int:
    return _LENGTH.unpack(header)[0]


def validator_of(headers: dict[str, str]) -> str | None:
    """A validator usable in If-Range: a strong ETag, else Last-Modified."""
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("last-modified")
