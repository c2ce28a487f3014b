"""The resource governor: pipelines ask it before taking work; they never measure for themselves.

It holds the bandwidth cap and the disk threshold, and remembers what it is
holding back and why, for `bfctl system` and the jobs' messages. The memory cap
and CPU workers join it here.
"""

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# The start of a job's message while the disk threshold holds it back.
WAITING_FOR_SPACE = "waiting for space"
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


@dataclass(frozen=True)
class Room:
    """What a destination filesystem may still take before it crosses the threshold."""

    total: int
    used: int
    reserved: int
    threshold: float

    @property
    def limit(self) -> int:
        return int(self.total * self.threshold)

    @property
    def bytes(self) -> int:
        """New bytes that may be taken on now: below the threshold, minus what is promised."""
        return max(0, self.limit - self.used - self.reserved)

    def describe(self, dest: str) -> str:
        return (
            f"{WAITING_FOR_SPACE}: {dest} holds {self.used:,} of {self.total:,} bytes, the "
            f"threshold {self.threshold:g} allows {self.limit:,}, and {self.reserved:,} are "
            "promised to transfers in flight; it goes on by itself once space is freed"
        )


Usage = tuple[int, int, int]  # shutil.disk_usage: total, used, free


def disk_usage(dest: Path) -> Usage:
    return shutil.disk_usage(dest)


class DiskThreshold:
    """Downloads stop taking files before a destination would be fuller than the threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def room_of(self, usage: Usage, reserved: int) -> Room:
        total, _, free = usage
        # `free` is what an unprivileged writer may use; root's reserve counts as used.
        return Room(total, total - free, reserved, self.threshold)


class Governor:
    def __init__(self, bandwidth: int, disk_threshold: float = 1.0):
        self.bandwidth = Bandwidth(bandwidth)
        self.disk = DiskThreshold(disk_threshold)
        # job name -> why the governor holds it back now.
        self.holds: dict[str, str] = {}
