"""The resource governor: pipelines ask it before taking work; they never measure for themselves.

It holds the bandwidth cap, the disk threshold, the memory cap and the CPU
worker processes, and remembers what it is holding back and why, for
`bfctl system` and the jobs' messages.
"""

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import psutil

from bulkforge.daemon.bandwidth import Bandwidth
from bulkforge.daemon.cpu_pool import CpuPool, TaskStopped, WorkerDied, WorkerError
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.proto.units import parse_limit, size_text

# The start of a job's message while the disk threshold holds it back.
WAITING_FOR_SPACE = "waiting for space"
WAITING_FOR_MEMORY = "waiting for memory"
# The start of a job's message while a failed data disk holds it (daemon/diskholds.py).
DISK_FAILED = "held: the disk failed"
# RSS is measured at most this often (each scheduling pass asks).
RSS_EVERY_S = 0.5
_CHILDREN_LISTED = Path(f"/proc/self/task/{os.getpid()}/children").exists()
__all__ = ["Governor", "TaskStopped", "WorkerDied", "WorkerError", "settled"]


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)


def use_lean_memory() -> None:
    """Arrow through malloc rather than its own pool, so freed buffers are not held for reuse.

    The daemon decodes a chunk of Parquet at a time and lets it go: a pool that keeps
    the pages of every chunk it has seen only raises RSS. Said through the environment,
    which Arrow reads when first loaded (by bfd or by a worker, which inherits it), so
    nothing imports pyarrow before a job needs it.
    """
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"


def give_back_memory() -> None:
    """Return freed heap pages to the kernel (glibc keeps them otherwise), where possible."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


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
            f"{WAITING_FOR_SPACE}: {dest} holds {size_text(self.used)} of {size_text(self.total)}, "
            f"the threshold {self.threshold:g} allows {size_text(self.limit)}, and "
            f"{size_text(self.reserved)} are "
            "promised to transfers in flight; it goes on by itself once space is freed"
        )


Usage = tuple[int, int, int]  # what shutil.disk_usage answers: total, used, free


class DiskThreshold:
    """Downloads stop taking files before a destination would be fuller than the threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def room_of(self, usage: Usage, reserved: int) -> Room:
        total, _, free = usage
        # `free` is what an unprivileged writer may use; root's reserve counts as used.
        return Room(total, total - free, reserved, self.threshold)


class Governor:
    def __init__(
        self,
        bandwidth: int,
        disk_threshold: float = 1.0,
        memory_cap: int = 0,
        cpu_workers: int = 1,
        max_connections: int = 16,
        per_host_connections: int = 16,
        transfer_workers: int = 1,
    ):
        self.bandwidth = Bandwidth(bandwidth)
        self.disk = DiskThreshold(disk_threshold)
        self.memory_cap = memory_cap
        self.cpu_workers = cpu_workers
        # Requests on the network at once: across every job, and to any one origin host.
        self.max_connections = max_connections
        self.per_host_connections = per_host_connections
        # Processes that carry the bytes of every transfer (daemon/transfer/workers.py).
        self.transfer_workers = transfer_workers
        self._listeners: list[Callable[[], None]] = []
        self._disk_listeners: list[Callable[[int, str], None]] = []
        # job name -> why the governor holds it back now.
        self.holds: dict[str, str] = {}
        self._rss = (0.0, 0)  # (when measured, bytes)
        self._pool = CpuPool(lambda: self.cpu_workers, self.task_memory)

    def task_memory(self) -> int:
        """Bytes one CPU task may take beyond its worker's baseline: its share of the memory
        cap (memory_cap / cpu_workers); 0, no limit, without a cap."""
        return self.memory_cap // max(1, self.cpu_workers) if self.memory_cap else 0

    def workers(self) -> CpuPool:
        """The CPU worker processes (cpu_workers of them), as an Executor of plain functions.

        A changed cpu_workers takes effect for the next piece of work.
        """
        return self._pool

    def submit(self, target: str, *args, owner: Hashable | None = None) -> Future:
        """Run `module:function` with args in a worker process, for owner (a job id).

        The function is named, not passed: the worker imports its module, so what only a
        pipeline's work needs (pyarrow, numpy …) is never loaded into bfd itself. The
        future ends with the function's value or exception; with `WorkerDied` when its
        worker died under it more often than the pool retries it; with `TaskStopped` once
        `stop(owner)` ended its worker.
        """
        return self._pool.run(target, args, owner=owner)

    def stop(self, owner: Hashable) -> int:
        """Stop owner's CPU work now (pause, cancel): its workers are killed and replaced."""
        return self._pool.stop(owner)

    def cpu_worker_pids(self) -> list[int]:
        return self._pool.pids()

    def close(self) -> None:
        """Stop the workers: queued work is dropped, running work gets a few seconds to end.

        Whatever a worker is ended in the middle of is written under a temp name and
        taken up again by the next bfd.
        """
        self._pool.close()

    def change(self, given: dict[str, str]) -> None:
        """Apply `bfctl system --set` values: all of them, or none when one is invalid."""
        try:
            limits = {key: parse_limit(key, value) for key, value in given.items()}
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        for key, value in limits.items():
            if key == "bandwidth":
                self.bandwidth.rate = int(value)
            elif key == "disk_threshold":
                self.disk.threshold = float(value)
            else:
                setattr(self, key, value)
        self._pool.resized()
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call listener (on the event loop) after every change of the limits."""
        self._listeners.append(listener)

    def rss(self) -> int:
        """RSS of the daemon and its worker processes, measured at most every RSS_EVERY_S."""
        measured_at, value = self._rss
        if time.monotonic() - measured_at > RSS_EVERY_S:
            value = sum(_rss_of(pid) for pid in (os.getpid(), *_descendants(os.getpid())))
            self._rss = (time.monotonic(), value)
        return value

    def note_hold(self, job: str, held: str | None) -> None:
        """Remember why a job is held back (None: it is not), for `bfctl system`.

        A failed disk's hold is DiskHolds' to lift (release_disk_hold): a runner's pass
        that read the job before it was held must not clear it.
        """
        if held:
            self.holds[job] = held
        elif not self.holds.get(job, "").startswith(DISK_FAILED):
            self.holds.pop(job, None)

    def disk_hold(self, dest: Path) -> str | None:
        """Why no new piece of work may start writing into dest: the threshold is reached.

        None when it may, and when dest cannot be measured (gone): the work then fails
        on its own, saying so.
        """
        try:
            room = self.disk.room_of(shutil.disk_usage(dest), 0)
        except OSError:
            return None
        return room.describe(str(dest)) if room.bytes <= 0 else None

    # -- data disks that failed: their jobs are held (daemon/diskholds.py) -----------------

    def disk_failed(self, job_id: int, error: BaseException) -> None:
        """Every kind's one report that the data disk under a job's dest failed (DiskFailed).

        The caller has put the work that met the error back to pending; the listener
        (DiskHolds) holds every job writing to that disk.
        """
        for listener in self._disk_listeners:
            listener(job_id, str(error))

    def on_disk_failure(self, listener: Callable[[int, str], None]) -> None:
        self._disk_listeners.append(listener)

    def release_disk_hold(self, job: str) -> None:
        if self.holds.get(job, "").startswith(DISK_FAILED):
            del self.holds[job]

    def memory_hold(self) -> str | None:
        """Why new work must wait for memory, or None."""
        rss = self.rss()
        if self.memory_cap and rss > self.memory_cap:
            # Idle workers hold what their tasks imported: without them the cap may be met.
            self._pool.end_idle()
            return (
                f"{WAITING_FOR_MEMORY}: bfd and its workers use {size_text(rss)}, more than the "
                f"memory cap of {size_text(self.memory_cap)}; new work starts once they use less"
            )
        return None


def settled(error: BaseException) -> bool:
    """Whether a task's failure is final at once: trying it again cannot help.

    Its worker died under it as often as the pool retries, or it ran out of its memory
    share (the same task on the same input asks the same again).
    """
    return isinstance(error, (WorkerDied, MemoryError))


_HOLD_PREFIXES = {
    DISK_FAILED: "disk_failed",
    WAITING_FOR_SPACE: "disk_space",
    WAITING_FOR_MEMORY: "memory",
    "transfer worker": "transfer_workers",
}
HOLD_REASONS = (*_HOLD_PREFIXES.values(), "other")


def hold_reason(why: str) -> str:
    """The reason of a hold in one word, for /metrics: its message says it in full."""
    return next((r for p, r in _HOLD_PREFIXES.items() if why.startswith(p)), "other")


def _descendants(pid: int) -> list[int]:
    """Every process under pid, from its threads' children lists: psutil's children() reads
    every process of the machine, a stall of milliseconds on the event loop twice a second."""
    if not _CHILDREN_LISTED:  # a kernel without CONFIG_PROC_CHILDREN
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    found = []
    for listed in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in map(int, listed.read_text().split()):
                found += [child, *_descendants(child)]
    return found


def _rss_of(pid: int) -> int:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).memory_info().rss
    return 0  # it ended since it was listed
