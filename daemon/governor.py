"""The resource governor: pipelines ask it before taking work; they never measure for themselves.

So far it holds the bandwidth cap; memory, CPU workers and disk thresholds join it here.
"""

import asyncio
import time

# How far ahead of the average rate a burst may run, in seconds of the cap.
BURST_S = 0.1


class Bandwidth:
    """A token bucket shared by every transfer. A rate of 0 means no cap.

    Takers may run into debt; each then sleeps until the bucket has paid it back,
    so concurrent transfers share the cap and the long-run rate is exact.
    """

    def __init__(self, bytes_per_s: int):
        self.rate = bytes_per_s
        self._tokens = 0.0
        self._last = time.monotonic()

    async def take(self, count: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        burst = self.rate * BURST_S
        self._tokens = min(burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= count
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


class Governor:
    def __init__(self, bandwidth: int):
        self.bandwidth = Bandwidth(bandwidth)
