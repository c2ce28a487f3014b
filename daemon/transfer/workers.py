"""bfd's transfer workers: started, fed, watched and restarted here.

`transfer_workers` processes (worker.py) carry the bytes; bfd keeps the
scheduling. An order goes to a worker only within that worker's share of the
per-host limit (the shares of the live workers add up to the limit, the odd
ones rotating by host), so the sockets a host sees never exceed the limit
however the requests are spread; the budget (budget.py) already holds the
requests themselves to both limits. Workers start with the first transfer, so
an idle bfd runs none.

A worker that dies (kill -9, a crash) is noticed at once through its socket: its
transfers go to the other workers (or its successor) from where their sinks
say, and it is started again. Restarts back off when it keeps dying, and
`bfctl system` says so; a transfer whose workers died under it three times
fails as retryable instead of taking down one worker after another.
"""

import asyncio
import contextlib
import itertools
import math
import os
import pickle
import socket
import subprocess
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from bulkforge.daemon.governor import Governor
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.transfer.budget import host_of
from bulkforge.daemon.transfer.protocol import (
    HEADER_SIZE,
    Answer,
    Cancel,
    Head,
    Miss,
    Order,
    Pool,
    Progress,
    Sink,
    frame,
    length_of,
)

# A transfer is given up (retryably) after its worker died under it this many times.
LOST_MAX = 3
# Deaths within this window count towards backing off a worker's restart.
DEATH_WINDOW_S = 60.0
RESTART_MAX_S = 60.0
# How long a cancelled transfer waits for its worker to confirm that it stopped writing.
CANCEL_WAIT_S = 5.0
# How long closing waits for workers to end before killing them.
CLOSE_WAIT_S = 5.0
# The key under which `bfctl system` shows the workers' trouble.
TROUBLE = "(transfer workers)"


class WorkerLost(Exception):
    """The worker carrying a transfer died; the transfer goes to another."""


@dataclass
class _Pending:
    order: Order
    host: str
    progress: Callable[[int], None]
    on_head: Callable[[str | None], None]
    # The answer from the worker it went to last (a new one each time it is sent).
    future: asyncio.Future = field(init=False)
    reported: int = 0
    lost: int = 0

    def report(self, size: int) -> None:
        if size > self.reported:
            self.progress(size - self.reported)
            self.reported = size


@dataclass(eq=False)
class _Worker:
    slot: int
    process: subprocess.Popen
    writer: asyncio.StreamWriter
    pending: dict[int, _Pending] = field(default_factory=dict)
    by_host: Counter[str] = field(default_factory=Counter)
    retiring: bool = False
    alive: bool = True

    def send(self, message: object) -> None:
        self.writer.write(frame(message))


class Workers:
    def __init__(self, settings: Settings, governor: Governor):
        self._settings = settings
        self._governor = governor
        self._ids = itertools.count(1)
        self._workers: dict[int, _Worker] = {}  # by slot
        self._deaths: dict[int, deque[float]] = {}
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        self._starting: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._changed: asyncio.Future | None = None
        self._started = False
        self._closing = False
        governor.on_change(self._resize)

    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers.values() if worker.alive]

    async def run(
        self,
        url: str,
        headers: dict[str, str],
        sink: Sink,
        timeout_s: float | None,
        progress: Callable[[int], None],
        on_head: Callable[[str | None], None],
    ) -> Answer:
        """Carry one order through a worker; its answer, whatever the origin said."""
        order = Order(next(self._ids), url, headers, sink, timeout_s)
        pending = _Pending(order, host_of(url), progress, on_head)
        while True:
            worker = await self._worker_for(pending.host)
            if worker is None:
                return Answer(order.id, miss=Miss("transfer", "stopping", "bfd is stopping"))
            answered = self._assign(worker, pending)
            try:
                return await asyncio.shield(answered)
            except WorkerLost:
                pending.lost += 1
                if pending.lost >= LOST_MAX:
                    message = f"the transfer worker died under this transfer {LOST_MAX} times"
                    return Answer(order.id, miss=Miss("transfer", "worker", message))
            except asyncio.CancelledError:
                await self._cancel(worker, pending)
                raise

    def _assign(self, worker: _Worker, pending: _Pending) -> asyncio.Future:
        """Send the order to worker; the future of its answer there."""
        pending.future = asyncio.get_running_loop().create_future()
        worker.pending[pending.order.id] = pending
        worker.by_host[pending.host] += 1
        worker.send(pending.order)
        return pending.future

    async def _cancel(self, worker: _Worker, pending: _Pending) -> None:
        """Tell the worker to drop the transfer and wait until it has: it writes no more."""
        if pending.future.done() or not worker.alive:
            return
        worker.send(Cancel(pending.order.id))
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(pending.future), CANCEL_WAIT_S)

    async def _worker_for(self, host: str) -> _Worker | None:
        """A live worker with room in its share of host; waits for one (None: bfd stops)."""
        if not self._started:
            self._started = True
            self._resize()
        while not self._closing:
            chosen = self._choose(host)
            if chosen is not None:
                return chosen
            await self._next_change()
        return None

    def _choose(self, host: str) -> _Worker | None:
        live = sorted(
            (w for w in self._workers.values() if w.alive and not w.retiring),
            key=lambda w: w.slot,
        )
        if not live:
            return None
        per_host, count = self._governor.per_host_connections, len(live)
        turn = zlib.crc32(host.encode())
        roomy = [
            worker
            for position, worker in enumerate(live)
            if worker.by_host[host] < _share(per_host, count, (position - turn) % count)
        ]
        return min(roomy, key=lambda w: len(w.pending), default=None)

    async def _next_change(self) -> None:
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def _resize(self) -> None:
        """Start or retire workers to match transfer_workers (only once transfers began)."""
        if not self._started or self._closing:
            return
        wanted = self._governor.transfer_workers
        for slot, worker in list(self._workers.items()):
            if slot >= wanted and not worker.retiring:
                worker.retiring = True
                self._retire_when_idle(worker)
        for slot in range(wanted):
            if not (slot in self._workers or slot in self._restarts or slot in self._starting):
                self._spawn(slot)
        self._share_pools()
        self._notify()

    def _share_pools(self) -> None:
        """Each worker keeps at most its share of max_connections idle."""
        live = [w for w in self._workers.values() if w.alive and not w.retiring]
        idle = math.ceil(self._governor.max_connections / max(1, len(live)))
        for worker in live:
            worker.send(Pool(idle))

    def _retire_when_idle(self, worker: _Worker) -> None:
        if worker.retiring and not worker.pending and worker.alive:
            worker.alive = False
            del self._workers[worker.slot]
            worker.writer.close()  # the worker ends at the end of its socket
            self._share_pools()

    def _spawn(self, slot: int) -> None:
        self._starting.add(slot)
        task = asyncio.get_running_loop().create_task(self._start(slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        try:
            if not (self._closing or slot >= self._governor.transfer_workers):
                await self._launch(slot)
        finally:
            self._starting.discard(slot)

    async def _launch(self, slot: int) -> None:
        ours, theirs = socket.socketpair()
        settings, bandwidth = self._settings, self._governor.bandwidth
        command = [
            sys.executable,
            "-m",
            "bulkforge.daemon.transfer.worker",
            str(theirs.fileno()),
            str(bandwidth.fd),
            str(os.getpid()),
            str(settings.connect_timeout),
            str(settings.read_timeout),
        ]
        # Started from the event loop's thread, which lives as long as bfd: the worker's
        # PR_SET_PDEATHSIG fires when the thread that started it ends.
        process = subprocess.Popen(
            command, pass_fds=(theirs.fileno(), bandwidth.fd), stdin=subprocess.DEVNULL
        )
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = _Worker(slot, process, writer)
        self._workers[slot] = worker
        logger.debug("transfer worker {} started (pid {})", slot, process.pid)
        listening = asyncio.get_running_loop().create_task(self._listen(worker, reader))
        self._tasks.add(listening)
        listening.add_done_callback(self._tasks.discard)
        self._share_pools()
        self._notify()

    async def _listen(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER_SIZE)
                body = await reader.readexactly(length_of(header))
                self._hear(worker, pickle.loads(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        await self._lost(worker)

    def _hear(self, worker: _Worker, message: object) -> None:
        if isinstance(message, Progress):
            for order_id, size in message.sizes.items():
                pending = worker.pending.get(order_id)
                if pending is not None:
                    pending.report(size)
        elif isinstance(message, Head):
            pending = worker.pending.get(message.id)
            if pending is not None:
                pending.on_head(message.validator)
        elif isinstance(message, Answer):
            pending = worker.pending.pop(message.id, None)
            if pending is None:
                return
            worker.by_host[pending.host] -= 1
            if not worker.by_host[pending.host]:
                del worker.by_host[pending.host]
            pending.report(message.size)
            if not pending.future.done():
                pending.future.set_result(message)
            self._governor.note_hold(TROUBLE, None)
            self._retire_when_idle(worker)
            self._notify()

    async def _lost(self, worker: _Worker) -> None:
        """The worker's socket ended: bfd closed it, or the worker died."""
        was_alive, worker.alive = worker.alive, False
        code = await asyncio.to_thread(worker.process.wait)
        if self._workers.get(worker.slot) is worker:
            del self._workers[worker.slot]
        for pending in worker.pending.values():
            if not pending.future.done():
                pending.future.set_exception(WorkerLost())
        worker.pending.clear()
        if was_alive and not self._closing:
            self._restart_later(worker, code)
        self._share_pools()
        self._notify()

    def _restart_later(self, worker: _Worker, code: int) -> None:
        now = time.monotonic()
        deaths = self._deaths.setdefault(worker.slot, deque())
        deaths.append(now)
        while deaths and now - deaths[0] > DEATH_WINDOW_S:
            deaths.popleft()
        delay = 0.0 if len(deaths) <= 1 else min(RESTART_MAX_S, 0.5 * 2 ** (len(deaths) - 2))
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        logger.warning(
            "transfer worker {} (pid {}) died ({}); its transfers go to the others; "
            "restarting it in {:.1f} s",
            worker.slot,
            worker.process.pid,
            how,
            delay,
        )
        if len(deaths) >= 3:
            trouble = (
                f"transfer worker {worker.slot} died {len(deaths)} times in the last "
                f"{DEATH_WINDOW_S:.0f} s (last: {how}); restarts back off, next in {delay:.0f} s"
            )
            logger.error(trouble)
            self._governor.note_hold(TROUBLE, trouble)
        self._restarts[worker.slot] = asyncio.get_running_loop().call_later(
            delay, self._spawn, worker.slot
        )

    async def close(self) -> None:
        """End every worker: their transfers stop where they are (partials stay)."""
        self._closing = True
        self._notify()
        for handle in self._restarts.values():
            handle.cancel()
        workers = list(self._workers.values())
        for worker in workers:
            worker.alive = False
            worker.writer.close()
        await asyncio.to_thread(_reap, [worker.process for worker in workers])
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _share(limit: int, count: int, position: int) -> int:
    """The share of limit of the worker at position among count (the first ones get one more)."""
    return limit // count + (1 if position < limit % count else 0)


def _reap(processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + CLOSE_WAIT_S
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
