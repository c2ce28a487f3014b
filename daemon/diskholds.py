"""A data disk that fails holds the jobs writing to it, not the node.

Every kind reports a write or a sync its disk refused (EIO, or the filesystem turned
read-only: `durable.DiskFailed`) through one call, `Governor.disk_failed`, after
putting the work that met it back to pending: nothing is marked done or failed.
Here every running job whose dest is on that filesystem, of any kind, is then paused
with a message naming the path and the error (`governor.DISK_FAILED`); its work in
flight goes back to pending as a pause's does, and the governor lists the hold for
`bfctl system` and /metrics. Jobs on other disks go on.

A held disk is probed every PROBE_EVERY_S: a small file written, fsynced and removed,
in a thread, one probe per disk at a time, given PROBE_TIMEOUT_S. Once the disk takes
the write, its held jobs go on by themselves. Only the same filesystem is probed: a dest
that now lies on another one (the disk unmounted, leaving its bare mount point; another
disk put in) waits for the operator's `bfctl resume`. `bfctl resume` continues a held job at
once: if the disk still fails, its next write holds it again. A held job's message is
its mark in the store, so a bfd started later finds the held jobs and probes again.

Only the store's own disk (the state dir) still stops bfd (exit 74): without it
nothing can be recorded at all.
"""

import asyncio
import contextlib
import os
import re

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.durable import probe_disk
from bulkforge.daemon.governor import DISK_FAILED, Governor
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.pipeline import Kinds
from bulkforge.daemon.store import Store, StoreFatal

PROBE_EVERY_S = 2.0
PROBE_TIMEOUT_S = 10.0

DiskKey = int | str  # a filesystem's st_dev, or a dest that could not be stat'ed


# Which filesystem a hold is on, in its message: a bfd started later probes that one only.
_HELD_ON = re.compile(r" \(filesystem (\d+):(\d+)\)")


def hold_message(dest: str, error: str, name: str, key: DiskKey) -> str:
    where = f" (filesystem {os.major(key)}:{os.minor(key)})" if isinstance(key, int) else ""
    return (
        f"{DISK_FAILED} under {dest}{where}: {error}; nothing done is lost, and the job goes "
        f"on once the disk takes a write again (probed every {PROBE_EVERY_S:g} s) or after "
        f"`bfctl resume {name}`"
    )


def held_on(message: str) -> DiskKey | None:
    """The filesystem a hold's message names (None: a message without one)."""
    found = _HELD_ON.search(message)
    return os.makedev(int(found[1]), int(found[2])) if found else None


def _disk_of(dest: str) -> DiskKey:
    try:
        return os.stat(dest).st_dev
    except OSError:
        return dest


class DiskHolds:
    """The jobs a failed disk holds are the store's paused jobs whose message says so;
    each probe pass reads them afresh, so a hold, a resume and a probe never race."""

    def __init__(self, store: Store, governor: Governor, kinds: Kinds):
        self._writer = store.writer
        self._readers = store.readers
        self._governor = governor
        self._kinds = kinds
        # job name -> the filesystem it was held on (a probe there only may let it go on)
        self._held_on: dict[str, DiskKey] = {}
        # held jobs whose dest now lies elsewhere (said once in the log)
        self._elsewhere: set[str] = set()
        # filesystem -> its probe in flight: one at a time, however long a dead one takes
        self._probing: dict[DiskKey, asyncio.Future] = {}
        self._pending: set[asyncio.Future] = set()
        governor.on_disk_failure(self._reported)

    def _reported(self, job_id: int, error: str) -> None:
        """On the event loop, from a runner: hold the jobs on that job's disk."""
        held = asyncio.ensure_future(self._hold(job_id, error))
        self._pending.add(held)
        held.add_done_callback(self._pending.discard)

    async def _hold(self, job_id: int, error: str) -> None:
        job = await self._readers.call(lambda conn: jobs.job_by_id(conn, job_id))
        if job is None:
            return
        key = await asyncio.to_thread(_disk_of, job.dest)
        running = await self._readers.call(
            lambda conn: jobs.jobs_in_states(conn, (JobState.RUNNING,))
        )
        for other in running:
            if other.id == job_id or await asyncio.to_thread(_disk_of, other.dest) == key:
                await self._hold_job(other, job.dest, error, key)

    async def _hold_job(self, job: jobs.JobRow, dest: str, error: str, key: DiskKey) -> None:
        message = hold_message(dest, error, job.name, key)
        try:
            paused = await self._writer.call(lambda conn: _pause(conn, job.id, message))
        except StoreFatal:
            return
        if not paused:
            return  # paused, cancelled or ended meanwhile: nothing of it runs
        self._held_on[job.name] = key
        self._kinds.of(job).runner.stop_job(job.id, cancelled=False)
        self._governor.note_hold(job.name, message)
        jobs.log_about(job).error("job {}: {}", job.name, message)

    # -- the disk coming back --------------------------------------------------------------

    async def run(self) -> None:
        """Probe the disks of the held jobs (a previous bfd's too) until stopped."""
        while True:
            with contextlib.suppress(StoreFatal):
                await self._pass()
            await asyncio.sleep(PROBE_EVERY_S)

    async def _pass(self) -> None:
        held = await self._readers.call(_held_jobs)
        names = {job.name for job in held}
        for name, why in list(self._governor.holds.items()):
            if why.startswith(DISK_FAILED) and name not in names:  # resumed, cancelled, removed
                self._governor.release_disk_hold(name)
                self._held_on.pop(name, None)
                self._elsewhere.discard(name)
        by_disk: dict[DiskKey, list[jobs.JobRow]] = {}
        for job in held:
            self._governor.note_hold(job.name, job.message)
            now = await asyncio.to_thread(_disk_of, job.dest)
            # Only the filesystem it was held on (its message says which, for a bfd started
            # since): not a bare mount point left by an unmounted disk, nor another disk.
            was = self._held_on.setdefault(job.name, held_on(job.message) or now)
            if was == now:
                by_disk.setdefault(now, []).append(job)
            elif job.name not in self._elsewhere:
                self._elsewhere.add(job.name)
                jobs.log_about(job).warning(
                    "job {}: {} is no longer on the filesystem that failed; the job waits "
                    "for that disk, or for `bfctl resume {}`",
                    job.name,
                    job.dest,
                    job.name,
                )
        for key, on_it in by_disk.items():
            if await self._takes_writes(key, on_it[0].dest):
                await self._go_on(on_it)

    async def _takes_writes(self, key: DiskKey, dest: str) -> bool:
        probing = self._probing.get(key)
        if probing is None or probing.done():
            probing = self._probing[key] = asyncio.ensure_future(
                asyncio.to_thread(probe_disk, dest)
            )
        try:  # a probe that hangs on a dead device is waited for once, never stacked
            await asyncio.wait_for(asyncio.shield(probing), PROBE_TIMEOUT_S)
        except (TimeoutError, OSError):
            return False
        return True

    async def _go_on(self, held: list[jobs.JobRow]) -> None:
        for job in held:
            went_on = await self._writer.call(lambda conn, job=job: _go_on(conn, job.name))
            self._governor.release_disk_hold(job.name)
            self._held_on.pop(job.name, None)
            self._elsewhere.discard(job.name)
            if went_on:
                jobs.log_about(job).info(
                    "job {}: the disk under {} takes writes again; the job goes on",
                    job.name,
                    job.dest,
                )
        self._kinds.wake()

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=5)


def _pause(conn: apsw.Connection, job_id: int, message: str) -> bool:
    job = jobs.job_by_id(conn, job_id)
    if job is None or job.state != JobState.RUNNING:
        return False
    jobs.move_job(conn, job, JobState.PAUSED, message=message)
    return True


def _held_jobs(conn: apsw.Connection) -> list[jobs.JobRow]:
    paused = jobs.jobs_in_states(conn, (JobState.PAUSED,))
    return [job for job in paused if job.message.startswith(DISK_FAILED)]


def _go_on(conn: apsw.Connection, name: str) -> bool:
    """A job still held by its disk goes on (one the operator moved meanwhile stays)."""
    job = jobs.find_job(conn, name)
    if job is None or job.state != JobState.PAUSED or not job.message.startswith(DISK_FAILED):
        return False
    jobs.move_job(conn, job, JobState.RUNNING, message="")
    return True
