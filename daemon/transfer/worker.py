"""A transfer worker: one process with one libcurl multi handle carrying many transfers.

bfd starts `transfer_workers` of these (`python -m bulkforge.daemon.transfer.worker`),
hands each its orders over a socketpair and hears back progress and one answer per
order. The worker puts bodies where the order says (sinks.py), hashing files as the
bytes arrive; bfd alone decides what is done. It ends when bfd closes the socket,
and the kernel ends it when bfd dies (PR_SET_PDEATHSIG), so no worker outlives bfd.

libcurl, not aiohttp on an event loop, carries the bytes: on the same 20,000 files
it moved 2,969 files/s on 5.2 CPU s against aiohttp's 2,160 on 8.3
(bench/client_bench.py). One select loop drives libcurl's socket interface and the
control socket together, so an order starts the moment it arrives.
"""

import contextlib
import selectors
import socket
import sys
import time

import pycurl

from bulkforge.daemon.bandwidth import Bandwidth
from bulkforge.daemon.lifeline import die_with
from bulkforge.daemon.transfer.classify import curl_miss, read_timeout, unusable_order
from bulkforge.daemon.transfer.protocol import (
    Answer,
    Cancel,
    Head,
    Miss,
    Order,
    Pool,
    Progress,
    ToFile,
    ToMemory,
    frame,
    unframe,
    validator_of,
)
from bulkforge.daemon.transfer.sinks import Head as Answered
from bulkforge.daemon.transfer.sinks import Stop, sink_for

# How often progress goes to bfd, and paused or silent transfers are looked at.
TICK_S = 0.25
# A file this large (or of unknown size) tells bfd its validator before its body.
HEAD_EARLY_AT = 1024 * 1024
# Bytes libcurl hands over per write callback: fewer Python calls per file.
BUFFER = 256 * 1024
CANCELLED = Miss("transfer", "cancelled", "cancelled by bfd")


class Transfer:
    """One order on the multi handle: its curl handle, its sink, what the origin said."""

    def __init__(self, worker: "Worker", order: Order):
        self.order = order
        self.sink = sink_for(order.sink)
        self.worker = worker
        self.head: Answered | None = None
        self.opened = False
        self.stop: Stop | None = None
        self.last_heard = time.monotonic()
        self.resume_at = 0.0
        self.paused = False
        self.handle = self._handle(worker)

    def _handle(self, worker: "Worker") -> pycurl.Curl:
        handle = pycurl.Curl()
        order = self.order
        handle.setopt(pycurl.URL, order.url)
        handle.setopt(
            pycurl.HTTPHEADER, [f"{name}: {value}" for name, value in order.headers.items()]
        )
        handle.setopt(pycurl.WRITEFUNCTION, self.on_body)
        handle.setopt(pycurl.HEADERFUNCTION, self.on_header)
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.FOLLOWLOCATION, 1)
        handle.setopt(pycurl.MAXREDIRS, 10)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, int(worker.connect_timeout * 1000))
        handle.setopt(pycurl.BUFFERSIZE, BUFFER)
        if worker.ca_file:
            handle.setopt(pycurl.CAINFO, worker.ca_file)
        if order.timeout_s is not None:
            handle.setopt(pycurl.TIMEOUT_MS, max(1, int(order.timeout_s * 1000)))
        return handle

    def on_header(self, line: bytes) -> None:
        self.last_heard = time.monotonic()
        text = line.decode("latin-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            # A new answer (after a redirect or a 100 Continue): forget the last one's headers.
            parts = text.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.head = Answered(status, parts[2] if len(parts) > 2 else "", {})
        elif ":" in text and self.head is not None:
            name, value = text.split(":", 1)
            self.head.headers[name.strip().lower()] = value.strip()

    def on_body(self, data: bytes) -> int | None:
        now = time.monotonic()
        self.last_heard = now
        if self.resume_at > now:
            self.paused = True
            return pycurl.WRITEFUNC_PAUSE  # libcurl hands the same bytes over again later
        try:
            if not self.opened:
                self._open()
            self.sink.write(data)
        except Stop as stop:
            self.stop = stop
            return 0  # anything but len(data) aborts the transfer
        wait = self.worker.bandwidth.take(len(data))
        if wait:
            self.resume_at = now + wait
        return None

    def _open(self) -> None:
        head = self.head or Answered(0, "no answer", {})
        self.opened = True
        self.sink.open(head)
        if isinstance(self.order.sink, ToFile):
            length = head.length()
            if length is None or length >= HEAD_EARLY_AT:
                self.worker.send(Head(self.order.id, validator_of(head.headers)))

    def finish(self, code: int, message: str) -> Answer:
        """The answer once libcurl is done with the transfer (code 0: it went through)."""
        try:
            if self.stop is not None:
                raise self.stop
            if code:
                connected = self.head is not None
                raise Stop(curl_miss(code, message, connected))
            if not self.opened:
                self._open()  # an answer without a body: judged (and a file created) here
            held = self.sink.close()
        except Stop as stop:
            self.sink.abandon()
            return self.answer(miss=stop.miss, refused=stop.refused, fatal=stop.fatal)
        return self.answer(size=held.size, digest=held.digest, data=held.data, sha256=held.sha256)

    def answer(self, **fields) -> Answer:
        head = self.head
        return Answer(
            self.order.id,
            status=head.status if head else 0,
            headers=head.headers if head else {},
            size=fields.pop("size", self.sink.size),
            **fields,
        )


class Worker:
    def __init__(
        self,
        control: socket.socket,
        bandwidth: Bandwidth,
        connect_timeout: float,
        read_timeout_s: float,
    ):
        self.control = control
        self.bandwidth = bandwidth
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout_s
        self.ca_file = _ca_file()
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ, None)
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self.transfers: dict[int, Transfer] = {}
        self.by_handle: dict[pycurl.Curl, Transfer] = {}
        self._curl_due: float | None = None
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self._reported: dict[int, int] = {}
        self._next_tick = 0.0
        self._open = True

    def send(self, message: object) -> None:
        self._outbox.append(frame(message))

    def run(self) -> None:
        while self._open or self.transfers:
            for key, mask in self.selector.select(self._timeout()):
                if key.fileobj is self.control:
                    self._read_control()
                else:
                    self._on_ready(key.fd, mask)
            if self._curl_due is not None and time.monotonic() >= self._curl_due:
                self._curl_due = None
                self.multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
            self._collect()
            if time.monotonic() >= self._next_tick:
                self._tick()
            self._flush()

    def _timeout(self) -> float | None:
        now = time.monotonic()
        due = [self._curl_due] if self._curl_due is not None else []
        if self.transfers:
            due.append(self._next_tick)
        return max(0.0, min(due) - now) if due else None

    def _read_control(self) -> None:
        try:
            data = self.control.recv(1 << 20)
        except ConnectionResetError:
            data = b""  # bfd's end went with our bytes unread: it was killed
        if not data:
            self._close()  # bfd closed its end: it is stopping or retiring this worker
            return
        self._inbox += data
        for message in unframe(self._inbox):
            if isinstance(message, Order):
                self._start(message)
            elif isinstance(message, Cancel):
                self._abort(message.id, CANCELLED)
            elif isinstance(message, Pool):
                self.multi.setopt(pycurl.M_MAXCONNECTS, max(1, message.idle))

    def _start(self, order: Order) -> None:
        try:
            transfer = Transfer(self, order)
        except (pycurl.error, UnicodeError, ValueError) as exc:
            # An order libcurl cannot take (a URL it cannot encode) fails alone: the worker
            # and every other transfer on it carry on.
            self.send(Answer(order.id, miss=unusable_order(exc)))
            return
        self.transfers[order.id] = transfer
        self.by_handle[transfer.handle] = transfer
        self.multi.add_handle(transfer.handle)

    def _abort(self, order_id: int, miss: Miss) -> None:
        transfer = self.transfers.pop(order_id, None)
        if transfer is None:
            return  # already answered
        self._detach(transfer)
        transfer.sink.abandon()
        self.send(transfer.answer(miss=miss))

    def _detach(self, transfer: Transfer) -> None:
        self.by_handle.pop(transfer.handle, None)
        self._reported.pop(transfer.order.id, None)
        self.multi.remove_handle(transfer.handle)
        transfer.handle.close()

    def _collect(self) -> None:
        while True:
            queued, succeeded, failed = self.multi.info_read()
            ended = [(handle, 0, "") for handle in succeeded] + failed
            for handle, code, message in ended:
                transfer = self.by_handle.get(handle)
                if transfer is None:
                    continue
                self._end(transfer, code, message)
            if not queued:
                return

    def _end(self, transfer: Transfer, code: int, message: str = "") -> None:
        del self.transfers[transfer.order.id]
        answer = transfer.finish(code, message)
        self._detach(transfer)
        self.send(answer)

    def _tick(self) -> None:
        """Progress to bfd; paused transfers resumed when the bucket allows; silent ones ended."""
        now = time.monotonic()
        self._next_tick = now + TICK_S
        sizes = {}
        for order_id, transfer in list(self.transfers.items()):
            if transfer.paused and transfer.resume_at <= now:
                transfer.paused = False
                transfer.last_heard = now
                try:
                    transfer.handle.pause(pycurl.PAUSE_CONT)
                except pycurl.error:
                    # The body held back met a sink that refused it (its Stop says why).
                    self._end(transfer, pycurl.E_WRITE_ERROR)
                    continue
            elif not transfer.paused and now - transfer.last_heard > self._silence(transfer):
                self._abort(order_id, read_timeout(self.read_timeout))
                continue
            size = transfer.sink.size
            if size != self._reported.get(order_id, 0) and not isinstance(
                transfer.order.sink, ToMemory
            ):
                sizes[order_id] = self._reported[order_id] = size
        if sizes:
            self.send(Progress(sizes))

    def _silence(self, transfer: Transfer) -> float:
        """How long a transfer may hear nothing: before any answer, connecting counts too."""
        if transfer.head is None:
            return self.connect_timeout + self.read_timeout
        return self.read_timeout

    def _flush(self) -> None:
        if self._outbox:
            payload, self._outbox = b"".join(self._outbox), []
            try:
                self.control.sendall(payload)
            except OSError:
                self._close()

    def _close(self) -> None:
        """bfd is gone or done with us: drop every transfer (their partials stay) and end."""
        self._open = False
        for order_id in list(self.transfers):
            self._abort(order_id, CANCELLED)
        self._outbox.clear()

    def _on_ready(self, fd: int, mask: int) -> None:
        action = 0
        if mask & selectors.EVENT_READ:
            action |= pycurl.CSELECT_IN
        if mask & selectors.EVENT_WRITE:
            action |= pycurl.CSELECT_OUT
        self.multi.socket_action(fd, action)

    def _on_socket(self, what: int, fd: int, multi, data) -> None:
        events = 0
        if what & pycurl.POLL_IN:
            events |= selectors.EVENT_READ
        if what & pycurl.POLL_OUT:
            events |= selectors.EVENT_WRITE
        if what == pycurl.POLL_REMOVE or not events:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
            return
        try:
            self.selector.modify(fd, events)
        except KeyError:
            self.selector.register(fd, events)

    def _on_timer(self, timeout_ms: int) -> None:
        self._curl_due = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000


def _ca_file() -> str | None:
    """Trusted CAs for https: certifi's bundle where installed (libcurl's wheel has none)."""
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def main(argv: list[str]) -> None:
    control_fd, bandwidth_fd, parent = (int(value) for value in argv[:3])
    connect_timeout, read_timeout_s = (float(value) for value in argv[3:5])
    die_with(parent)
    control = socket.socket(fileno=control_fd)
    Worker(control, Bandwidth(fd=bandwidth_fd), connect_timeout, read_timeout_s).run()


if __name__ == "__main__":
    main(sys.argv[1:])
