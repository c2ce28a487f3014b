"""The clean pipeline: scans each job's zips, and cleans them a series at a time in workers.

One asyncio task loops over the live clean jobs. A job that starts (submitted,
resumed, retried) has its input scanned whole: new zips are registered, changed
ones go back to pending. A job cleaning after a download looks at that
download's newly verified files on every pass, until the download has ended.

A series with pending zips is claimed (its pending zips move to running) and
handed to one of the governor's worker processes, with every usable zip of the
series; the worker rebuilds the partitions whose sources changed and answers
what each zip turned out to be. Its answer is committed only after the
partitions are durable (the worker made them so before answering). An
interrupted series (pause, cancel, drain) leaves its zips pending; the worker
already running finishes or dies with bfd, and whatever it wrote is a complete
partition, built again the next time if the store never heard of it.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.cleaner import records, report
from bulkforge.daemon.cleaner.request import CleanRequest
from bulkforge.daemon.cleaner.scan import Scan
from bulkforge.daemon.cleaner.work import SeriesResult, SeriesTask, inflate_limit
from bulkforge.daemon.durable import DiskFailed
from bulkforge.daemon.failures import attempt_logger, worker_failure
from bulkforge.daemon.governor import TaskStopped, settled
from bulkforge.daemon.machines.job import TERMINAL, JobState
from bulkforge.daemon.pipeline import Cooldowns, JobLoop, Services
from bulkforge.daemon.store import StoreFatal

# A series whose cleaning failed (a full disk, a worker killed) waits 2, 4 s, then its zips fail.
SERIES_RETRY_S = 1.0
SERIES_ATTEMPTS = 3


# Run in a worker by name: bfd itself never imports the cleaning (pyarrow).
CLEAN_SERIES = "bulkforge.daemon.cleaner.series:clean_series"


@dataclass(frozen=True)
class Source:
    """Where a job's zips are: the layout root, and whether a download still adds to it."""

    root: str
    # The download job it follows, None for --input; its state when last looked at.
    after: jobs.JobRow | None


# (job, whole scan) -> the scan; the kind provides it (a directory walk, or a download's files).
Scanner = Callable[[jobs.JobRow, CleanRequest, bool], Awaitable[tuple[Source, Scan]]]
# Queues again the ended jobs whose download changed since they ended; their names.
Reopener = Callable[[], Awaitable[list[str]]]
# How often ended --after jobs are compared with their download (a read of its verified
# files past the clean job's frontier, as each pass of a live one does).
FOLLOW_POLL_S = 5.0


@dataclass
class _SeriesRun:
    job_id: int
    claimed: records.Claimed
    task: asyncio.Task | None = None


class Cleaner(JobLoop):
    kind_name = records.KIND

    def __init__(self, services: Services, scanner: Scanner, reopener: Reopener):
        super().__init__(services)
        self._reopen = reopener
        self._governor = services.governor
        self._writer = services.store.writer
        self._scan = scanner
        self._runs: dict[tuple[int, str], _SeriesRun] = {}
        # (dest, series) -> the worker's future, until the worker is done with it: no second
        # worker starts on a series another may still be writing (even one given up on).
        self._writing: dict[tuple[str, str], Future] = {}
        # (job, series) whose last run failed
        self._cooldowns = Cooldowns(SERIES_RETRY_S, SERIES_ATTEMPTS)

    # -- what others ask of the pipeline -------------------------------------------------

    @property
    def active_transfers(self) -> int:
        """Series being cleaned in worker processes now."""
        return len(self._runs)

    def in_flight_bytes(self, job_id: int) -> int:
        return 0

    def stop_job(self, job_id: int, cancelled: bool) -> None:
        for run in list(self._runs.values()):
            if run.job_id == job_id and run.task is not None:
                run.task.cancel()
        self._governor.stop(job_id)  # its workers are killed now, not at the end of the series
        if cancelled:
            self.forget_job(job_id)

    def forget_job(self, job_id: int) -> None:
        self._cooldowns.forget_job(job_id)

    async def drain(self, timeout: float) -> None:
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        await self._stop_tasks(tasks, timeout)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """The passes over live jobs, and beside them the watch over ended --after jobs."""
        follower = asyncio.create_task(self._follow_downloads())
        try:
            await super().run()
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def _follow_downloads(self) -> None:
        """A clean --after job sees its download's retries even after it ended: reopened."""
        while not self._stopping:
            try:
                if await self._reopen():
                    self.wake()
            except StoreFatal:
                return
            except Exception:
                logger.exception("clean: comparing ended jobs with their downloads failed")
            await asyncio.sleep(FOLLOW_POLL_S)

    async def _schedule_job(self, job: jobs.JobRow) -> None:
        try:
            request = CleanRequest.of_spec(job.name, json.loads(job.spec))
            source, found = await self._scan(job, request, job.state == JobState.QUEUED)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            message = f"its input cannot be read: {exc}"
            await self._writer.call(lambda conn: jobs.fail_live_job(conn, job.id, message))
            return
        whole = job.state == JobState.QUEUED
        if whole or found.zips or found.outside or found.filtered:
            job = await self._writer.call(lambda conn: _register(conn, job, found, whole))
        held = self._governor.memory_hold() or await asyncio.to_thread(
            self._governor.disk_hold, request.dest
        )
        self._governor.note_hold(job.name, held)
        if not held and not self._stopping:
            await self._claim(job, request, source)
        if not any(run.job_id == job.id for run in self._runs.values()):
            await self._finish_if_done(job, request, source)

    async def _claim(self, job: jobs.JobRow, request: CleanRequest, source: Source) -> None:
        free = self._governor.cpu_workers - len(self._runs)
        if free <= 0:
            return
        dest = str(request.dest)
        busy = {series for (d, series) in self._writing if d == dest}
        busy |= {series for (j, series) in self._cooldowns.cooling() if j == job.id}
        claimed = await self._writer.call(
            lambda conn: records.claim_series(conn, job.id, source.root, busy, free)
        )
        for series in claimed:
            if self._stopping:
                await self._release(job.id, series.series)
                continue
            run = _SeriesRun(job.id, series)
            key = (job.id, series.series)
            self._runs[key] = run
            with jobs.working_on(job):
                run.task = asyncio.create_task(self._run_series(job, dest, run))
            run.task.add_done_callback(lambda task, key=key, run=run: self._ended(key, run, task))

    # -- one series ------------------------------------------------------------------------

    async def _run_series(self, job: jobs.JobRow, dest: str, run: _SeriesRun) -> None:
        series = run.claimed.series
        empty = await self._readers.call(lambda conn: records.empty_days(conn, dest, series))
        limit = inflate_limit(self._governor.memory_cap, self._governor.cpu_workers)
        task = SeriesTask(dest, series, tuple(run.claimed.zips), empty, limit)
        started = time.monotonic()
        future = self._governor.submit(CLEAN_SERIES, task, owner=job.id)
        self._writing[(dest, series)] = future
        future.add_done_callback(lambda _, key=(dest, series): self._writing.pop(key, None))
        result: SeriesResult = await asyncio.wrap_future(future)
        done, failed = await self._writer.call(
            lambda conn: records.finish_series(conn, job.id, dest, run.claimed, result)
        )
        self._cooldowns.succeeded((job.id, series))
        logger.info(
            "job {}: {} cleaned in {:.1f} s ({} zip(s) parsed, {} partition(s) rebuilt, "
            "{:,} rows; {} done, {} failed)",
            job.name,
            series,
            time.monotonic() - started,
            result.parsed,
            len(result.built),
            result.rows_out,
            done,
            failed,
        )

    def _ended(self, key: tuple[int, str], run: _SeriesRun, task: asyncio.Task) -> None:
        if self._runs.get(key) is run:
            del self._runs[key]
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or isinstance(error, TaskStopped):
            self._in_background(self._release(*key))
        elif isinstance(error, DiskFailed):  # its zips wait for the disk, the job is held
            self._in_background(self._release(*key))
            self._governor.disk_failed(key[0], error)
        elif error is not None and not isinstance(error, StoreFatal):
            self._series_failed(key, error)
        self.wake()

    def _series_failed(self, key: tuple[int, str], error: BaseException) -> None:
        """A series that failed waits, then is tried again; the third failure fails its zips."""
        job_id, series = key
        failures, final = self._cooldowns.failed(key)
        final = final or settled(error)  # the governor retried a dead worker already
        attempt_logger(error).error(
            "clean: series {} of job {} failed (attempt {}): {}", series, job_id, failures, error
        )
        if not final:
            self._in_background(self._release(job_id, series))
            return
        error_class, message = worker_failure(error, "writing its partitions")
        self._in_background(
            self._writer.call(
                lambda conn: records.fail_series(conn, job_id, series, error_class, message)
            )
        )

    async def _release(self, job_id: int, series: str) -> None:
        with contextlib.suppress(StoreFatal):
            await self._writer.call(lambda conn: records.release(conn, job_id, series))

    # -- the end of a job ------------------------------------------------------------------

    async def _finish_if_done(self, job: jobs.JobRow, request: CleanRequest, source: Source):
        """Complete (or fail) a job with no zip left to clean and no download still adding."""
        if source.after is not None and source.after.state not in TERMINAL:
            return
        if await self._readers.call(lambda conn: records.ITEMS.unfinished(conn, job.id)):
            return
        summary = await self._readers.call(lambda conn: report.gather(conn, job))
        try:
            await asyncio.to_thread(report.write, request.dest, summary)
        except DiskFailed as exc:
            self._governor.disk_failed(job.id, exc)
            return
        except OSError as exc:
            message = f"its stats could not be written: {exc}"
            await self._writer.call(lambda conn: jobs.fail_live_job(conn, job.id, message))
            return
        await self._writer.call(lambda conn: _end_job(conn, job.id, summary))


def _register(conn: apsw.Connection, job: jobs.JobRow, found: Scan, whole: bool) -> jobs.JobRow:
    new, changed = records.register(conn, job.id, found, whole)
    if whole:
        job = jobs.start_job(conn, job)
    if new or changed or whole:
        logger.info(
            "job {}: {} new zip(s), {} changed; {} outside the layout, {} filtered out",
            job.name,
            new,
            changed,
            found.outside,
            found.filtered,
        )
    return job


def _end_job(conn: apsw.Connection, job_id: int, summary: report.Summary) -> None:
    job = jobs.job_by_id(conn, job_id)
    if job is None or job.state != JobState.RUNNING or records.ITEMS.unfinished(conn, job_id):
        return
    notes = summary.notes()
    if summary.failed:
        message = f"{summary.failed:,} zip(s) failed; `bfctl failures {job.name}` lists them"
        jobs.move_job(conn, job, JobState.FAILED, message="; ".join([message, *notes]))
        jobs.log_about(job).warning("job {} ended with failures: {}", job.name, message)
        return
    jobs.move_job(conn, job, JobState.COMPLETED, message="; ".join(notes))
    logger.info("job {} completed ({:,} rows out)", job.name, summary.rows_out)
