"""The generate pipeline: hands each job's pending parts to the governor's workers.

One asyncio task loops over the live generate jobs. A part is claimed (running),
made by a worker process (generated, rendered, written durably) and committed
done. An interrupted part (pause, cancel, drain, kill -9) goes back to pending and
is made again, to the same bytes. A part whose writing fails waits 2 s, then 4 s;
the third failure fails it (`write`), and the job once nothing else is left.
"""

import asyncio
import contextlib
import json
import time

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.durable import DiskFailed
from bulkforge.daemon.failures import attempt_logger, worker_failure
from bulkforge.daemon.generator import records
from bulkforge.daemon.generator.work import PartTask, PartWritten
from bulkforge.daemon.governor import TaskStopped, settled
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.pipeline import Cooldowns, JobLoop, Services
from bulkforge.daemon.store import StoreFatal
from bulkforge.proto.units import size_text

# Run in a worker by name: bfd itself never imports the generating (numpy, pyarrow).
MAKE_PART = "bulkforge.daemon.generator.parts:make_part"


class Generator(JobLoop):
    kind_name = records.KIND

    def __init__(self, services: Services):
        super().__init__(services)
        self._governor = services.governor
        self._writer = services.store.writer
        # part id -> (job id, its task)
        self._runs: dict[int, tuple[int, asyncio.Task]] = {}
        self._cooldowns = Cooldowns()

    @property
    def active_transfers(self) -> int:
        """Parts being made in worker processes now."""
        return len(self._runs)

    def in_flight_bytes(self, job_id: int) -> int:
        return 0

    def stop_job(self, job_id: int, cancelled: bool) -> None:
        for owner, task in list(self._runs.values()):
            if owner == job_id:
                task.cancel()
        self._governor.stop(job_id)  # its workers are killed now, not at the end of the part
        if cancelled:
            self.forget_job(job_id)

    def forget_job(self, job_id: int) -> None:
        self._cooldowns.forget_job(job_id)

    async def drain(self, timeout: float) -> None:
        await self._stop_tasks([task for _, task in self._runs.values()], timeout)

    async def _schedule_job(self, job: jobs.JobRow) -> None:
        if job.state == JobState.QUEUED:
            job = await self._writer.call(lambda conn: jobs.start_job(conn, job))
        held = self._governor.memory_hold() or await asyncio.to_thread(
            self._governor.disk_hold, job.dest
        )
        self._governor.note_hold(job.name, held)
        free = self._governor.cpu_workers - len(self._runs)
        if not held and free > 0 and not self._stopping:
            claimed = await self._writer.call(lambda conn: records.claim(conn, job.id, free))
            for part in claimed:
                self._start(job, part)
        if not any(owner == job.id for owner, _ in self._runs.values()):
            await self._writer.call(lambda conn: _finish_if_done(conn, job.id))

    def _start(self, job: jobs.JobRow, part: records.Part) -> None:
        task = PartTask(job.spec, part.table, part.index, part.start, part.rows)
        with jobs.working_on(job):
            run = asyncio.create_task(self._make(job, part, task))
        self._runs[part.id] = (job.id, run)
        run.add_done_callback(lambda done: self._ended(job.id, part, done))

    async def _make(self, job: jobs.JobRow, part: records.Part, task: PartTask) -> None:
        if (job.id, part.id) in self._cooldowns.cooling():
            await asyncio.sleep(self._cooldowns.base_s * 2)
        started = time.monotonic()
        future = self._governor.submit(MAKE_PART, task, owner=job.id)
        written: PartWritten = await asyncio.wrap_future(future)
        await self._writer.call(
            lambda conn: records.finish(conn, part.id, written.size, written.sha256)
        )
        self._cooldowns.succeeded((job.id, part.id))
        logger.info(
            "job {}: {} part {} written ({:,} rows, {}, {:.1f} s)",
            job.name,
            part.table,
            part.index,
            part.rows,
            size_text(written.size),
            time.monotonic() - started,
        )

    def _ended(self, job_id: int, part: records.Part, task: asyncio.Task) -> None:
        self._runs.pop(part.id, None)
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or isinstance(error, TaskStopped):
            self._in_background(self._release(part.id))
        elif isinstance(error, DiskFailed):  # the part waits for the disk, the job is held
            self._in_background(self._release(part.id))
            self._governor.disk_failed(job_id, error)
        elif error is not None and not isinstance(error, StoreFatal):
            self._part_failed(job_id, part, error)
        self.wake()

    def _part_failed(self, job_id: int, part: records.Part, error: BaseException) -> None:
        failures, final = self._cooldowns.failed((job_id, part.id))
        final = final or settled(error)  # the governor retried a dead worker already
        attempt_logger(error).error(
            "generate: {} part {} failed (attempt {}): {}", part.table, part.index, failures, error
        )
        if not final:
            self._in_background(self._release(part.id))
            return
        error_class, message = worker_failure(error, "writing the part")
        self._in_background(
            self._writer.call(lambda conn: records.fail(conn, part.id, error_class, message))
        )

    async def _release(self, part_id: int) -> None:
        with contextlib.suppress(StoreFatal):
            await self._writer.call(lambda conn: records.ITEMS.release(conn, [part_id]))


def _finish_if_done(conn: apsw.Connection, job_id: int) -> None:
    job = jobs.job_by_id(conn, job_id)
    if job is None or job.state != JobState.RUNNING or records.ITEMS.unfinished(conn, job_id):
        return
    failed = records.ITEMS.failed(conn, job_id)
    if failed:
        message = f"{failed:,} part(s) failed; `bfctl failures {job.name}` lists them"
        jobs.move_job(conn, job, JobState.FAILED, message=message)
        jobs.log_about(job).warning("job {} ended with failures: {}", job.name, message)
        return
    rows = sum(row[1] for row in records.rows_by_table(conn, job_id))
    jobs.move_job(conn, job, JobState.COMPLETED, message="")
    logger.info("job {} completed ({:,} rows, spec {})", job.name, rows, _tables(job))


def _tables(job: jobs.JobRow) -> str:
    return ", ".join(json.loads(job.spec)["spec"]["tables"])
