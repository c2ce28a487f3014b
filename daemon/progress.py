"""Rates and the ETA of a watched job: defined once, from the view's derived numbers."""

import time
from collections import deque
from dataclasses import dataclass

from bulkforge.daemon.jobs import JobRow, JobView
from bulkforge.daemon.machines.job import TERMINAL
from bulkforge.daemon.store import now_ms


@dataclass(frozen=True)
class Pace:
    # Negative until two snapshots give a span to measure (a first 0 would be a guess);
    # never negative once measured.
    bytes_per_s: float
    items_per_s: float
    # Seconds until done at this pace; negative when unknown.
    eta_s: float
    # Work done went back within the window (a file started over because its origin
    # ignored Range, failed items queued again): rates are measured afresh from there.
    restarted: bool = False


UNMEASURED = Pace(-1.0, -1.0, -1.0)

Sample = tuple[float, int, int]  # (monotonic seconds, bytes done, items finished)


class Rates:
    """Bytes and items per second over the last few snapshots of a watch.

    The rule that keeps a rate from going negative: a sample below the one before it (in
    bytes or in items) is a restart, never negative progress. The window starts again at
    it, so every window holds only samples that never go down, and the pace says
    `restarted` until the window has moved past the restart.
    """

    def __init__(self, window: int = 10):
        self._samples: deque[Sample] = deque(maxlen=window)
        self._restart_at: Sample | None = None

    def add(self, view: JobView) -> Pace:
        pace = self.add_sample((time.monotonic(), view.bytes_done, view.finished))
        return with_eta(pace, view)

    def add_sample(self, sample: Sample) -> Pace:
        """The pace after one more sample (no ETA: that needs the view's totals)."""
        if self._samples and went_back(self._samples[-1], sample):
            self._samples.clear()
            self._restart_at = sample
        self._samples.append(sample)
        restarted = self._restart_at is not None and self._samples[0] is self._restart_at
        (t0, b0, i0), (t1, b1, i1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return Pace(-1.0, -1.0, -1.0, restarted)
        return Pace(max(0.0, (b1 - b0) / span), max(0.0, (i1 - i0) / span), -1.0, restarted)


def went_back(before: Sample, after: Sample) -> bool:
    return after[1] < before[1] or after[2] < before[2]


def with_eta(pace: Pace, view: JobView) -> Pace:
    """The pace with the seconds left at it: by bytes when their total is known, else items."""
    eta = -1.0
    if view.bytes_total_known and view.bytes_total and pace.bytes_per_s > 0:
        eta = max(0, view.bytes_total - view.bytes_done) / pace.bytes_per_s
    elif pace.items_per_s > 0:
        eta = max(0, view.items_total - view.finished) / pace.items_per_s
    return Pace(pace.bytes_per_s, pace.items_per_s, eta, pace.restarted)


def throughput_bucket_ms(job: JobRow) -> int:
    """Throughput buckets for `bfctl stats`: a few dozen over the job's life, a second at least."""
    span = max(1, (now_ms() if job.state not in TERMINAL else job.updated_at) - job.created_at)
    for bucket in (1_000, 5_000, 10_000, 60_000, 300_000, 3_600_000):
        if span / bucket <= 60:
            return bucket
    return 86_400_000
