"""The connection budget: every request on the network holds one slot of it.

At most `total` requests run at once across every job and kind, and at most
`per_host` to any one origin (scheme, host and port). Waiters for one host are
served in arrival order; hosts with waiters take turns, so a host that is full
never holds back a request for another. The limits are read at every grant:
`bfctl system --set` changes them while transfers run.
"""

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def host_of(url: str) -> str:
    """The origin a request goes to, as the per-host limit counts it."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class Budget:
    def __init__(self, limits: Callable[[], tuple[int, int]]):
        # (total, per_host), asked at every grant.
        self._limits = limits
        self._busy = 0
        self._by_host: Counter[str] = Counter()
        self._by_label: Counter[str] = Counter()
        self._waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()

    @asynccontextmanager
    async def slot(self, url: str, label: str) -> AsyncIterator[None]:
        """Hold one slot (global and for url's host) for the duration of the block."""
        host = host_of(url)
        await self._acquire(host)
        self._by_label[label] += 1
        try:
            yield
        finally:
            self._by_label[label] -= 1
            self._release(host)

    def busy(self, label: str | None = None) -> int:
        """Slots held now, by requests of one label (a kind) or by all."""
        return self._busy if label is None else self._by_label[label]

    def grant(self) -> None:
        """Give free slots to waiters; called on every release and when the limits change."""
        total, per_host = self._limits()
        for host in list(self._waiting):
            if self._busy >= total:
                return
            queue = self._waiting[host]
            while queue and self._by_host[host] < per_host and self._busy < total:
                future = queue.popleft()
                if not future.done():
                    self._take(host)
                    future.set_result(None)
            if queue:
                self._waiting.move_to_end(host)  # the next host gets the next turn
            else:
                del self._waiting[host]

    async def _acquire(self, host: str) -> None:
        total, per_host = self._limits()
        if host not in self._waiting and self._busy < total and self._by_host[host] < per_host:
            self._take(host)
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(host, deque()).append(future)
        self.grant()  # waiters ahead may all have been cancelled
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(host)  # granted just as it was cancelled: give it back
            raise

    def _take(self, host: str) -> None:
        self._busy += 1
        self._by_host[host] += 1

    def _release(self, host: str) -> None:
        self._busy -= 1
        self._by_host[host] -= 1
        if not self._by_host[host]:
            del self._by_host[host]
        self.grant()
