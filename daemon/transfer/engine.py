"""The transfer engine: the one HTTP client every kind hands its requests to.

Downloads, scenes (and later the fleet) do not open sessions of their own: each
request goes through `exchange` or `get`, which holds one slot of the shared
`Budget` (a global and a per-host connection limit across every job and kind)
for exactly as long as the request is on the network. Waiting between retries
happens in the caller, outside any slot. Transport errors come out classified
(`classify.py`), in the words `bfctl failures` uses.

aiohttp is imported with the first request, so an idle bfd does not carry it. It
carries the bytes rather than httpx: profiled on 2,000 x 256 KiB from loopback nginx,
httpcore's per-request pool bookkeeping took ~15% of the event loop (bench/RESULTS.md).
The transfer workers are to use libcurl instead (bench/client_bench.py).
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bulkforge.daemon.governor import Governor
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.transfer.budget import Budget
from bulkforge.daemon.transfer.classify import fail, status_failure, transport_failure


@dataclass(frozen=True)
class Body:
    data: bytes
    content_type: str


class Engine:
    def __init__(self, settings: Settings, governor: Governor):
        self._settings = settings
        self._governor = governor
        self.budget = Budget(lambda: (governor.max_connections, governor.per_host_connections))
        governor.on_change(self.budget.grant)
        self._session: Any = None

    async def throttle(self, count: int) -> None:
        """Wait as the one bandwidth bucket asks for `count` bytes received."""
        await self._governor.bandwidth.take(count)

    @asynccontextmanager
    async def exchange(
        self,
        url: str,
        *,
        label: str,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[Any]:
        """A GET and its response, holding a slot until the block ends (body read or not).

        An aiohttp or timeout error inside the block comes out as TransferFailed.
        """
        import aiohttp

        options: dict[str, Any] = {"headers": headers}
        if timeout_s is not None:
            options["timeout"] = self._timeout(total=timeout_s)
        async with self.budget.slot(url, label):
            try:
                async with self._open().get(url, **options) as response:
                    yield response
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise transport_failure(exc) from None

    async def get(self, url: str, *, label: str, max_size: int, timeout_s: float) -> Body:
        """A whole body of at most max_size bytes, answered 200 and as long as announced."""
        async with self.exchange(url, label=label, timeout_s=timeout_s) as response:
            if response.status != 200:
                raise status_failure(response)
            announced = response.content_length
            if announced is not None and announced > max_size:
                raise _too_large(announced, max_size)
            parts, size = [], 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > max_size:
                    raise _too_large(size, max_size)
                await self.throttle(len(chunk))
                parts.append(chunk)
            if announced is not None and size != announced:
                raise fail("transfer", "short_body", f"got {size} of {announced} bytes")
            return Body(b"".join(parts), response.headers.get("content-type", ""))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> Any:
        """The session, opened at the first request. The budget, not aiohttp, limits it.

        Bytes are stored as the origin sent them: no transparent decompression.
        """
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout(total=None), auto_decompress=False
            )
        return self._session

    def _timeout(self, total: float | None) -> Any:
        import aiohttp

        settings = self._settings
        return aiohttp.ClientTimeout(
            total=total, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )


def _too_large(size: int, limit: int) -> Exception:
    return fail(
        "transfer", "too_large", f"the body is over {limit:,} bytes ({size:,} so far)", False
    )
