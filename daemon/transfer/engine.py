"""The transfer engine: the one way every kind moves bytes over HTTP.

Downloads, scenes (and later the fleet) do not open sessions of their own: each
request goes through `run` (or `get`), which holds one slot of the shared
`Budget` (a global and a per-host connection limit across every job and kind)
for exactly as long as the request is on the network, and hands it to a
transfer worker process (workers.py) that carries the bytes into the order's
sink. Waiting between retries happens in the caller, outside any slot. Failures
come out classified (`classify.py`), in the words `bfctl failures` uses.
"""

from collections.abc import Callable
from dataclasses import dataclass

from bulkforge.daemon.durable import DiskFailed
from bulkforge.daemon.governor import Governor
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.transfer.budget import Budget
from bulkforge.daemon.transfer.failed import failed_by
from bulkforge.daemon.transfer.protocol import Answer, Sink, ToMemory, validator_of
from bulkforge.daemon.transfer.workers import Workers


@dataclass(frozen=True)
class Body:
    data: bytes
    content_type: str


def _ignore(_: object) -> None:
    pass


class Engine:
    def __init__(self, settings: Settings, governor: Governor):
        self.budget = Budget(lambda: (governor.max_connections, governor.per_host_connections))
        governor.on_change(self.budget.grant)
        self.workers = Workers(settings, governor)

    async def run(
        self,
        url: str,
        sink: Sink,
        *,
        label: str,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        progress: Callable[[int], None] = _ignore,
        on_head: Callable[[str | None], None] = _ignore,
    ) -> Answer:
        """A GET of url into sink, holding a slot while it runs.

        Raises TransferFailed when the origin or the network failed it, DiskFailed when
        its bytes could not be made durable; a refusal (protocol.RESTART, RANGES_REFUSED)
        comes back in the answer. progress hears the bytes in the sink as they grow;
        on_head the origin's validator before the body of a large file.
        """
        async with self.budget.slot(url, label):
            answer = await self.workers.run(
                url, dict(headers or {}), sink, timeout_s, progress, on_head
            )
        if answer.fatal:
            raise DiskFailed(answer.fatal)
        if answer.miss is not None:
            if answer.size:
                on_head(validator_of(answer.headers))  # bytes a later attempt may resume
            raise failed_by(answer.miss)
        return answer

    async def get(
        self,
        url: str,
        *,
        label: str,
        max_size: int,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Body:
        """A whole body of at most max_size bytes, answered 200 and as long as announced."""
        answer = await self.run(
            url, ToMemory(max_size), label=label, headers=headers, timeout_s=timeout_s
        )
        return Body(answer.data or b"", answer.headers.get("content-type", ""))

    async def close(self) -> None:
        await self.workers.close()
