"""A fault-injecting HTTP/1.1 file origin for tests and benches, on loopback.

Two ways to run it:

- in-process: ``with Origin({"a.bin": data}) as origin:`` serves on 127.0.0.1:<port 0> from a
  background thread with its own event loop, so sync and async tests can both use it;
- as a process: ``python tests/origin.py --root DIR [--port 0] [--faults F.json] [--log L.jsonl]``
  prints ``READY http://127.0.0.1:PORT`` once listening and serves until SIGTERM/SIGINT.
  ``OriginProcess`` wraps that for tests that must survive killing everything else.

It behaves like a plain static server (strong ETag, Last-Modified, single byte ranges, If-Range),
except where a ``Fault`` says otherwise. Faults are what real origins and CDNs do to a downloader:
error statuses with or without Retry-After, resets and truncations mid-body, silently corrupt
bytes, ignored ranges, stalls, lying Content-Length, and HTML error pages served with 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web
from loopback import BackgroundServer

CHUNK = 64 * 1024
HOST = "127.0.0.1"
# Stalled handlers are woken on stop, so nothing legitimately needs longer than this to finish.
SHUTDOWN_TIMEOUT = 1.0
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service unavailable</title></head>\n"
    b"<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n"
)


class FaultKind(enum.StrEnum):
    """What a faulty origin does instead of serving the file normally."""

    STATUS_404 = "status_404"
    """404 Not Found (a permanent error)."""
    STATUS_410 = "status_410"
    """410 Gone (a permanent error)."""
    STATUS_429 = "status_429"
    """429 Too Many Requests, with ``Retry-After: <retry_after>`` when set."""
    STATUS_500 = "status_500"
    """500 Internal Server Error."""
    STATUS_503 = "status_503"
    """503 Service Unavailable, with ``Retry-After: <retry_after>`` when set."""
    RESET = "reset"
    """Headers and ``after_bytes`` of the body, then a TCP reset (RST, not FIN)."""
    SHORT_BODY = "short_body"
    """Full Content-Length announced, ``after_bytes`` sent, then a clean close (FIN)."""
    CORRUPT = "corrupt"
    """Right length and headers; ``flip_bytes`` bytes in the middle of the body XOR 0xFF."""
    IGNORE_RANGE = "ignore_range"
    """A ranged GET is answered 200 with the full body, as if Range were unsupported."""
    STALL = "stall"
    """Headers and ``after_bytes`` of the body, then silence for ``seconds``, then the rest."""
    WRONG_LENGTH = "wrong_length"
    """Content-Length is the real length + ``delta``: delta > 0 sends the whole body and
    closes (client sees a short body); delta < 0 sends exactly that many bytes (client sees
    a complete, truncated response on a healthy connection)."""
    HTML_200 = "html_200"
    """200 with a small ``text/html`` error page instead of the file (captive portals, CDNs)."""


STATUS_OF = {
    FaultKind.STATUS_404: 404,
    FaultKind.STATUS_410: 410,
    FaultKind.STATUS_429: 429,
    FaultKind.STATUS_500: 500,
    FaultKind.STATUS_503: 503,
}
# Kinds that only make sense with a body: a HEAD must not use up their `times`.
BODY_KINDS = frozenset(
    {
        FaultKind.RESET,
        FaultKind.SHORT_BODY,
        FaultKind.CORRUPT,
        FaultKind.IGNORE_RANGE,
        FaultKind.STALL,
    }
)


@dataclasses.dataclass(frozen=True)
class Fault:
    """One misbehaviour, applied to the first ``times`` matching requests (None: to all).

    A request matches when its method is in ``methods`` (default: GET and HEAD for status,
    html_200 and wrong_length faults; GET only for body faults); ``ignore_range`` additionally
    matches only requests that carry a Range header. A fault set on the name ``"*"`` applies to
    every path without its own fault, counting ``times`` per path.
    """

    kind: FaultKind
    times: int | None = None
    retry_after: int | None = None
    """Seconds for the Retry-After header of status faults; None sends no header."""
    after_bytes: int | None = None
    """Body bytes sent before reset/short_body/stall; None means half of the body."""
    seconds: float = 30.0
    """How long a stall lasts."""
    delta: int = 100
    """wrong_length: announced Content-Length minus the real one (non-zero)."""
    flip_bytes: int = 8
    """corrupt: how many bytes in the middle of the body are XORed with 0xFF."""
    methods: frozenset[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.methods is not None:
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if self.times is not None and self.times < 0:
            raise ValueError(f"times must be >= 0 or None, got {self.times}")
        if self.kind is FaultKind.WRONG_LENGTH and self.delta == 0:
            raise ValueError("wrong_length needs a non-zero delta")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form, e.g. ``{"kind": "reset", "after_bytes": 100}``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - fields
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**raw)

    def applies_to(self, method: str, ranged: bool, exists: bool = True) -> bool:
        if not exists and self.kind not in STATUS_OF and self.kind is not FaultKind.HTML_200:
            return False  # nothing to corrupt, cut or stall: the path answers a plain 404
        methods = self.methods
        if methods is None:
            methods = frozenset({"GET"} if self.kind in BODY_KINDS else {"GET", "HEAD"})
        if method not in methods:
            return False
        return ranged or self.kind is not FaultKind.IGNORE_RANGE


def load_faults(path: str | os.PathLike[str]) -> dict[str, Fault]:
    """Read a faults file: a JSON object mapping file names (or "*") to fault objects."""
    raw = json.loads(Path(path).read_text())
    return {name: Fault.from_dict(spec) for name, spec in raw.items()}


@dataclasses.dataclass
class Request:
    """One request the origin answered, logged before the first response byte is sent.

    ``bytes_sent`` counts body bytes handed to the socket and may still grow while a streamed
    (faulty or on-disk) response is in flight. ``at`` is ``time.monotonic()`` on arrival
    (system-wide on Linux, so comparable across processes); ``conn`` is the client's port,
    which tells connections apart (keep-alive).
    """

    path: str
    method: str
    range_header: str | None
    status: int
    bytes_sent: int
    fault: str | None
    if_range: str | None = None
    at: float = 0.0
    conn: int = 0


class Meter:
    """Open connections and requests being answered, now and at their peak.

    `of(address)` is the part of them that came in on one of the origin's listening
    addresses (see Origin's `aliases`): each address is another host to a client.
    Updated on the origin's one event loop, so no count races another.
    """

    def __init__(self) -> None:
        self.connections = self.peak_connections = 0
        self.requests = self.peak_requests = 0
        self._parts: dict[str, Meter] = {}

    def of(self, address: str) -> Meter:
        return self._parts.setdefault(address, Meter())

    def connection(self, address: str, delta: int) -> None:
        for meter in (self, self.of(address)):
            meter.connections += delta
            meter.peak_connections = max(meter.peak_connections, meter.connections)

    def request(self, address: str, delta: int) -> None:
        for meter in (self, self.of(address)):
            meter.requests += delta
            meter.peak_requests = max(meter.peak_requests, meter.requests)

    def reset_peaks(self) -> None:
        """Peaks from now on (what is open now is their floor)."""
        for meter in (self, *self._parts.values()):
            meter.peak_connections, meter.peak_requests = meter.connections, meter.requests


def _address(transport: Any) -> str:
    """The origin's address a connection came in on."""
    return transport.get_extra_info("sockname")[0]


class _MeteredServer(web.Server):
    """aiohttp's low-level server, telling a meter of every connection opened and lost."""

    def __init__(self, *args: Any, meter: Meter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._meter = meter
        self._addresses: dict[Any, str] = {}

    def connection_made(self, handler: Any, transport: Any) -> None:
        super().connection_made(handler, transport)
        self._addresses[handler] = _address(transport)
        self._meter.connection(self._addresses[handler], +1)

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._meter.connection(self._addresses.pop(handler), -1)


class RequestLog:
    """A list of ``Request`` records, safe to read from one thread while another appends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Request] = []

    def append(self, record: Request) -> None:
        with self._lock:
            self._items.append(record)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self._items)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        with self._lock:
            return self._items[index]

    def __repr__(self) -> str:
        return f"RequestLog({self.snapshot()!r})"


def bytes_served(records: Iterable[Request], path: str | None = None) -> int:
    """Body bytes sent, for one path or in total."""
    name = None if path is None else path.removeprefix("/")
    return sum(r.bytes_sent for r in records if name is None or r.path == name)


def make_etag(data_or_digest: bytes | str) -> str:
    """The strong ETag the origin sends for some content (quotes included)."""
    digest = data_or_digest
    if isinstance(digest, bytes):
        digest = hashlib.sha256(digest).hexdigest()
    return f'"{digest[:32]}"'


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One servable file: content in memory, or a path read per request."""

    size: int
    etag: str
    last_modified: str
    data: bytes | None = None
    path: Path | None = None

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) as one buffer; files are small enough for that."""
        if self.data is not None:
            return self.data[start:end]
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) in pieces of at most CHUNK."""
        if self.data is not None:
            view = memoryview(self.data)
            for pos in range(start, end, CHUNK):
                yield view[pos : min(pos + CHUNK, end)]
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(start)
            yield from _read_chunks(f, end - start)


def _read_chunks(f: IO[bytes], count: int) -> Iterator[bytes]:
    # Synchronous reads on purpose: test files are small and hot in the page cache, and a
    # thread hop per 64 KiB would cost more than the read.
    while count > 0:
        chunk = f.read(min(CHUNK, count))
        if not chunk:
            return
        count -= len(chunk)
        yield chunk


class _MemoryFiles:
    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        for name, data in files.items():
            self.set(name, data)

    def get(self, name: str) -> _Entry | None:
        return self._entries.get(name)

    def set(self, name: str, data: bytes) -> None:
        data = bytes(data)
        modified = time.time()
        with self._lock:
            old = self._entries.get(name)
            if old is not None:
                # Keep Last-Modified moving even for two changes within one second, so a
                # date validator never matches content it did not describe.
                old_ts = _parse_ts(old.last_modified)
                modified = max(modified, old_ts + 1)
            self._entries[name] = _Entry(len(data), make_etag(data), http_date(modified), data)

    def remove(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)


def _parse_ts(date: str) -> float:
    return parsedate_to_datetime(date).timestamp()


class _DiskFiles:
    """Files under a root directory; ETags are cached per (inode, size, mtime)."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        if not self._root.is_dir():
            raise NotADirectoryError(f"origin root {root} is not a directory")
        self._cache: dict[str, tuple[tuple[int, int, int], _Entry]] = {}
        for path in sorted(self._root.rglob("*")):
            if path.is_file():
                self.get(path.relative_to(self._root).as_posix())

    def get(self, name: str) -> _Entry | None:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts):
            return None
        path = self._root.joinpath(*parts)
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file() or not path.resolve().is_relative_to(self._root):
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in _read_chunks(f, st.st_size):
                digest.update(chunk)
        entry = _Entry(
            st.st_size, make_etag(digest.hexdigest()), http_date(st.st_mtime), None, path
        )
        self._cache[name] = (key, entry)
        return entry


class _Faults:
    """Faults by path with their use counters; shared between the test and the loop thread."""

    def __init__(self, faults: Mapping[str, Fault] | None) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        self._used: dict[tuple[str, str], int] = {}
        for name, fault in (faults or {}).items():
            self.set(name, fault)

    def set(self, name: str, fault: Fault | None) -> None:
        name = name.removeprefix("/")
        with self._lock:
            if fault is None:
                self._faults.pop(name, None)
            else:
                self._faults[name] = fault
            for key in [k for k in self._used if k[0] == name]:
                del self._used[key]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._used.clear()

    def take(self, path: str, method: str, ranged: bool, exists: bool) -> Fault | None:
        """The fault to apply to this request, using up one of its ``times``."""
        with self._lock:
            key = path if path in self._faults else "*"
            fault = self._faults.get(key)
            if fault is None or not fault.applies_to(method, ranged, exists):
                return None
            used = self._used.get((key, path), 0)
            if fault.times is not None and used >= fault.times:
                return None
            self._used[(key, path)] = used + 1
            return fault


def _parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """One byte range as [start, end); None to ignore the header; False if unsatisfiable.

    Multiple ranges and malformed headers are ignored (RFC 9110 allows it), which answers 200.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:  # suffix range: the last N bytes
            suffix = int(last)
            if suffix < 0:
                return None
            return (max(size - suffix, 0), size) if suffix and size else False
        start = int(first)
        end = int(last) + 1 if last else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end <= start):
        return None
    if start >= size:
        return False
    return start, size if end is None else min(end, size)


class _Server:
    """The aiohttp handler and everything it reads; lives on one event loop."""

    def __init__(
        self,
        files: _MemoryFiles | _DiskFiles,
        faults: _Faults,
        log: RequestLog | None,
        log_file: IO[str] | None = None,
    ) -> None:
        self.meter = Meter()
        self.files = files
        self.faults = faults
        self.log = log
        self.log_file = log_file
        self.stopping: asyncio.Event | None = None

    async def start(
        self, host: str, port: int, aliases: tuple[str, ...] = ()
    ) -> tuple[web.ServerRunner, int]:
        self.stopping = asyncio.Event()
        # handler_cancellation: a client that gives up on a stalled body frees its handler.
        server = _MeteredServer(
            self.handle, handler_cancellation=True, access_log=None, meter=self.meter
        )
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        for alias in aliases:
            await web.TCPSite(runner, alias, port, backlog=1024).start()
        return runner, port

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        record = Request(
            path=request.path.removeprefix("/"),
            method=request.method,
            range_header=request.headers.get("Range"),
            status=0,
            bytes_sent=0,
            fault=None,
            if_range=request.headers.get("If-Range"),
            at=time.monotonic(),
            conn=_peer_port(request),
        )
        address = _address(request.transport)
        self.meter.request(address, +1)
        try:
            return await self._respond(request, record)
        finally:
            self.meter.request(address, -1)
            if self.log_file is not None:
                self.log_file.write(json.dumps(dataclasses.asdict(record)) + "\n")
                self.log_file.flush()

    def _logged(self, record: Request, status: int, fault: Fault | None) -> None:
        record.status = status
        record.fault = None if fault is None else str(fault.kind)
        if self.log is not None:
            self.log.append(record)

    async def _respond(self, request: web.BaseRequest, record: Request) -> web.StreamResponse:
        method = request.method
        if method not in ("GET", "HEAD"):
            self._logged(record, 405, None)
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        entry = self.files.get(record.path)
        ranged = method == "GET" and record.range_header is not None
        fault = self.faults.take(record.path, method, ranged, entry is not None)
        if fault is not None and (fault.kind in STATUS_OF or fault.kind is FaultKind.HTML_200):
            return self._error_page(record, fault)
        if entry is None:
            self._logged(record, 404, None)
            return web.Response(status=404, text="not found\n")

        headers = {
            "ETag": entry.etag,
            "Last-Modified": entry.last_modified,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        start, end, status = 0, entry.size, 200
        honour_range = ranged and (fault is None or fault.kind is not FaultKind.IGNORE_RANGE)
        if honour_range and _if_range_matches(record.if_range, entry):
            assert record.range_header is not None
            parsed = _parse_range(record.range_header, entry.size)
            if parsed is False:
                self._logged(record, 416, fault)
                headers["Content-Range"] = f"bytes */{entry.size}"
                return web.Response(status=416, headers=headers)
            if parsed:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        length = end - start
        kind = None if fault is None else fault.kind

        if method == "HEAD":
            announced = length + fault.delta if kind is FaultKind.WRONG_LENGTH else length
            headers["Content-Length"] = str(max(announced, 0))
            self._logged(record, status, fault)
            return web.Response(status=status, headers=headers)

        if kind is None or kind is FaultKind.IGNORE_RANGE:
            if entry.data is not None:
                record.bytes_sent = length
                self._logged(record, status, fault)
                return web.Response(status=status, headers=headers, body=entry.read(start, end))
            return await self._stream(request, record, status, headers, entry, start, end, fault)
        assert fault is not None
        if kind is FaultKind.CORRUPT:
            body = bytearray(entry.read(start, end))
            middle = len(body) // 2
            for i in range(middle, min(middle + fault.flip_bytes, len(body))):
                body[i] ^= 0xFF
            record.bytes_sent = len(body)
            self._logged(record, status, fault)
            return web.Response(status=status, headers=headers, body=bytes(body))
        if kind is FaultKind.WRONG_LENGTH and fault.delta < 0:
            body = entry.read(start, max(start, end + fault.delta))
            record.bytes_sent = len(body)
            self._logged(record, status, fault)
            return web.Response(status=status, headers=headers, body=body)
        return await self._stream(request, record, status, headers, entry, start, end, fault)

    def _error_page(self, record: Request, fault: Fault) -> web.Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(int(fault.retry_after))
        if fault.kind is FaultKind.HTML_200:
            status, body = 200, HTML_PAGE
            headers["Content-Type"] = "text/html; charset=utf-8"
        else:
            status = STATUS_OF[fault.kind]
            body = f"{status} (injected fault)\n".encode()
            headers["Content-Type"] = "text/plain; charset=utf-8"
        if record.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            self._logged(record, status, fault)
            return web.Response(status=status, headers=headers)
        record.bytes_sent = len(body)
        self._logged(record, status, fault)
        return web.Response(status=status, headers=headers, body=body)

    async def _stream(
        self,
        request: web.BaseRequest,
        record: Request,
        status: int,
        headers: dict[str, str],
        entry: _Entry,
        start: int,
        end: int,
        fault: Fault | None,
    ) -> web.StreamResponse:
        """Send [start, end) piece by piece, misbehaving as the fault says."""
        length = end - start
        kind = None if fault is None else fault.kind
        announced = length
        cut = length  # body bytes to send before the fault acts
        if fault is not None and kind is FaultKind.WRONG_LENGTH:
            announced = length + fault.delta
        elif fault is not None and kind in (FaultKind.RESET, FaultKind.SHORT_BODY, FaultKind.STALL):
            cut = length // 2 if fault.after_bytes is None else min(fault.after_bytes, length)

        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = announced
        self._logged(record, status, fault)
        await resp.prepare(request)
        transport = request.transport
        assert transport is not None
        try:
            sent = await self._send(resp, record, entry.chunks(start, start + cut))
            if kind is FaultKind.STALL:
                assert fault is not None and self.stopping is not None
                if sent == 0:
                    await resp.write(b"")  # the headers alone, so the client sees a response
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), fault.seconds)
                if self.stopping.is_set():
                    transport.abort()
                    return resp
                await self._send(resp, record, entry.chunks(start + cut, end))
            elif kind in (FaultKind.RESET, FaultKind.SHORT_BODY, FaultKind.WRONG_LENGTH):
                if sent == 0:
                    await resp.write(b"")
                await _flushed(transport)
                resp.force_close()
                if kind is FaultKind.RESET:
                    _abort_with_rst(transport)
                else:
                    transport.close()
                return resp
            await resp.write_eof()
        except ConnectionError:
            # The client went away; aiohttp sees the closed transport and drops the connection.
            pass
        return resp

    @staticmethod
    async def _send(resp: web.StreamResponse, record: Request, chunks: Iterator[bytes]) -> int:
        sent = 0
        for chunk in chunks:
            # Counted before the write: a client may see the bytes (and a test read the log)
            # before write() returns from draining.
            sent += len(chunk)
            record.bytes_sent += len(chunk)
            await resp.write(chunk)
        return sent


def _if_range_matches(if_range: str | None, entry: _Entry) -> bool:
    """RFC 9110 13.1.5: without a match the Range is ignored and the full body is sent."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return value == entry.etag  # weak tags never match: W/"x" != "x"
    return value == entry.last_modified


def _peer_port(request: web.BaseRequest) -> int:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return peer[1] if peer else 0


async def _flushed(transport: asyncio.BaseTransport, timeout: float = 2.0) -> None:
    """Wait until the kernel has taken what was written, so closing loses nothing of it."""
    assert isinstance(transport, asyncio.WriteTransport)
    deadline = asyncio.get_running_loop().time() + timeout
    while transport.get_write_buffer_size() and not transport.is_closing():
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.002)


def _abort_with_rst(transport: asyncio.BaseTransport) -> None:
    # A plain abort() still ends with FIN; SO_LINGER 0 makes the kernel send RST, which is what
    # a crashed server or a middlebox does and what the client must survive.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Origin(BackgroundServer):
    """An origin on 127.0.0.1:<free port>, served from a background thread.

    ``files`` maps names (relative paths such as ``"dir/a.bin"``) to content; alternatively
    ``root`` serves a directory from disk. Use as a context manager, or start()/stop().
    """

    thread_name = "test-origin"

    def __init__(
        self,
        files: Mapping[str, bytes] | None = None,
        faults: Mapping[str, Fault] | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        host: str = HOST,
        port: int = 0,
        aliases: tuple[str, ...] = (),
    ) -> None:
        """`aliases`: more loopback addresses (127.0.0.2 …) to serve the same files on, the
        same port; to a client each is another host (see `url_for`)."""
        super().__init__()
        if files is not None and root is not None:
            raise ValueError("give files or root, not both")
        self._memory = _MemoryFiles(files or {}) if root is None else None
        store: _MemoryFiles | _DiskFiles = self._memory or _DiskFiles(Path(root or "."))
        self._faults = _Faults(faults)
        self.log = RequestLog()
        self._server = _Server(store, self._faults, self.log)
        # Connections and requests open at this origin, in all and per address.
        self.meter = self._server.meter
        self._host = host
        self._port = port
        self._aliases = aliases

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("origin is not running")
        return f"http://{self._host}:{self.port}"

    def url_for(self, name: str, host: str | None = None) -> str:
        """The URL of a file, on `host` (one of the aliases) when given."""
        base = self.url if host is None else f"http://{host}:{self.port}"
        return f"{base}/{quote(name.removeprefix('/'))}"

    def set_file(self, name: str, data: bytes) -> None:
        """Add or replace a file; the new content gets a new ETag and a later Last-Modified."""
        if self._memory is None:
            raise RuntimeError("set_file needs an in-memory origin (files=...), not root=")
        self._memory.set(name.removeprefix("/"), data)

    def remove_file(self, name: str) -> None:
        if self._memory is None:
            raise RuntimeError("remove_file needs an in-memory origin (files=...), not root=")
        self._memory.remove(name.removeprefix("/"))

    def set_fault(self, name: str, fault: Fault | None) -> None:
        """Set (or with None remove) the fault of a path, or of "*"; resets its ``times``."""
        self._faults.set(name, fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def requests(self, path: str) -> list[Request]:
        name = path.removeprefix("/")
        return [r for r in self.log if r.path == name]

    def bytes_served(self, path: str | None = None) -> int:
        return bytes_served(self.log, path)

    async def _serve(self):
        runner, self.port = await self._server.start(self._host, self._port, self._aliases)

        async def shutdown() -> None:
            assert self._server.stopping is not None
            self._server.stopping.set()
            await runner.cleanup()

        return shutdown


class OriginProcess:
    """``tests/origin.py`` run as a child process; outlives whatever the test kills.

    ``log_path`` (written by the child, one JSON record per request, after the request has been
    handled) feeds ``log``/``requests()``/``bytes_served()``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        faults: Mapping[str, Fault] | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        port: int = 0,
        startup_timeout: float = 15.0,
    ) -> None:
        self.root = Path(root)
        self.faults = dict(faults or {})
        self.log_path = None if log_path is None else Path(log_path)
        self._port = port
        self._startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self._faults_file: Path | None = None
        self.url = ""

    def url_for(self, name: str) -> str:
        return f"{self.url}/{quote(name.removeprefix('/'))}"

    def start(self) -> OriginProcess:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--root", str(self.root)]
        cmd += ["--port", str(self._port)]
        if self.faults:
            fd, name = tempfile.mkstemp(prefix="origin-faults-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(faults_to_json(self.faults), f)
            self._faults_file = Path(name)
            cmd += ["--faults", name]
        if self.log_path is not None:
            cmd += ["--log", str(self.log_path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        # A thread reads the line so a child that never gets ready cannot hang the test.
        line: list[str] = []
        stdout = self.proc.stdout
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._startup_timeout)
        if not line or not line[0].startswith("READY "):
            self.stop()
            raise RuntimeError(f"origin process did not get ready: {line!r}")
        self.url = line[0].split()[1]
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._faults_file is not None:
            self._faults_file.unlink(missing_ok=True)
            self._faults_file = None
        return self.proc.returncode

    def __enter__(self) -> OriginProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def log(self) -> list[Request]:
        if self.log_path is None or not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [Request(**json.loads(line)) for line in lines if line.endswith("}")]

    def requests(self, path: str) -> list[Request]:
        name = path.removeprefix("/")
        return [r for r in self.log if r.path == name]

    def bytes_served(self, path: str | None = None) -> int:
        return bytes_served(self.log, path)


def faults_to_json(faults: Mapping[str, Fault]) -> dict[str, dict[str, Any]]:
    """The JSON form ``--faults`` reads; default-valued fields are left out."""
    out: dict[str, dict[str, Any]] = {}
    for name, fault in faults.items():
        spec: dict[str, Any] = {"kind": str(fault.kind)}
        for field in dataclasses.fields(Fault)[1:]:
            value = getattr(fault, field.name)
            if value != field.default:
                spec[field.name] = sorted(value) if isinstance(value, frozenset) else value
        out[name] = spec
    return out


async def _serve(args: argparse.Namespace) -> None:
    faults = load_faults(args.faults) if args.faults else {}
    log_file = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    # No in-memory log here: a long bench must not grow without bound; --log is the record.
    server = _Server(_DiskFiles(Path(args.root)), _Faults(faults), None, log_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner, port = await server.start(args.host, args.port)
    print(f"READY http://{args.host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        assert server.stopping is not None
        server.stopping.set()
        await runner.cleanup()
        if log_file is not None:
            log_file.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="directory whose files are served")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--faults", help='JSON file: {"name or *": {"kind": ..., ...}}')
    parser.add_argument("--log", help="append one JSON line per request to this file")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        parser.error(f"--root {args.root} is not a directory")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
