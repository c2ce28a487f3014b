"""The bandwidth cap: one token bucket shared by bfd and every transfer worker.

The bucket's state (rate, tokens, when last filled) lives in a memfd that bfd
creates and each worker maps, and a take is a read-modify-write under a POSIX
record lock, so the cap holds across processes and transfers. Takers may run
into debt; each then waits until the bucket has paid it back, so concurrent
transfers share the cap and the long-run rate is exact. A rate of 0: no cap.
Standard library only: the workers import it.
"""

import fcntl
import mmap
import os
import struct
import time
from contextlib import contextmanager

# How far ahead of the average rate a burst may run, in seconds of the cap.
BURST_S = 0.1
_STATE = struct.Struct("ddd")  # rate (bytes/s), tokens, when last filled (CLOCK_MONOTONIC)


class Bandwidth:
    def __init__(self, rate: int = 0, fd: int | None = None):
        """A new bucket of `rate` bytes/s, or (fd given) the one another process made."""
        created = fd is None
        if fd is None:
            # Inherited by the workers (passed explicitly), so not close-on-exec.
            fd = os.memfd_create("bulkforge-bandwidth", 0)
            os.ftruncate(fd, _STATE.size)
        self.fd = fd
        self._map = mmap.mmap(fd, _STATE.size)
        if created:
            self.rate = rate

    @property
    def rate(self) -> int:
        return int(_STATE.unpack_from(self._map)[0])

    @rate.setter
    def rate(self, bytes_per_s: int) -> None:
        with self._locked():
            _STATE.pack_into(self._map, 0, float(bytes_per_s), 0.0, time.monotonic())

    def take(self, count: int) -> float:
        """Take count bytes; returns the seconds to wait before taking more (0: none)."""
        if self.rate <= 0:
            return 0.0
        with self._locked():
            rate, tokens, last = _STATE.unpack_from(self._map)
            if rate <= 0:
                return 0.0
            now = time.monotonic()
            tokens = min(rate * BURST_S, tokens + (now - last) * rate) - count
            _STATE.pack_into(self._map, 0, rate, tokens, now)
        return -tokens / rate if tokens < 0 else 0.0

    @contextmanager
    def _locked(self):
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
