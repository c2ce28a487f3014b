"""Rates and the ETA of a watched job: defined once, from the view's derived numbers."""

import time
from collections import deque
from dataclasses import dataclass

from bulkforge.daemon.jobs import JobRow, JobView
from bulkforge.daemon.machines.job import TERMINAL
from bulkforge.daemon.store import now_ms


@dataclass(frozen=True)
class Pace:
    # Negative until two snapshots give a span to measure (a first 0 would be a guess).
    bytes_per_s: float
    items_per_s: float
    # Seconds until done at this pace; negative when unknown.
    eta_s: float


UNMEASURED = Pace(-1.0, -1.0, -1.0)


class Rates:
    """Bytes and items per second over the last few snapshots of a watch."""

    def __init__(self, window: int = 10):
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=window)

    def add(self, view: JobView) -> Pace:
        self._samples.append((time.monotonic(), view.bytes_done, view.finished))
        (t0, b0, i0), (t1, b1, i1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return UNMEASURED
        bytes_rate, items_rate = (b1 - b0) / span, (i1 - i0) / span
        eta = -1.0
        if view.bytes_total_known and view.bytes_total and bytes_rate > 0:
            eta = (view.bytes_total - view.bytes_done) / bytes_rate
        elif items_rate > 0:
            eta = (view.items_total - view.finished) / items_rate
        return Pace(bytes_rate, items_rate, eta)


def throughput_bucket_ms(job: JobRow) -> int:
    """Throughput buckets for `bfctl stats`: a few dozen over the job's life, a second at least."""
    span = max(1, (now_ms() if job.state not in TERMINAL else job.updated_at) - job.created_at)
    for bucket in (1_000, 5_000, 10_000, 60_000, 300_000, 3_600_000):
        if span / bucket <= 60:
            return bucket
    return 86_400_000
