"""The scenes pipeline: registers each job's input, claims shards, runs items, writes shards.

One asyncio task loops over the live scenes jobs. For each it keeps a
registrar going until the whole input is in the store (a chunk per commit, so
work starts at once), and enough shards in flight to keep every connection
busy. A shard's items run through their steps concurrently; their outcomes are
streamed into the shard's temporary files, and once the last item has ended
the shard is made durable, and only then are its items committed `done` or
`failed`, all in one transaction.

A shard interrupted (pause, cancel, drain, kill -9) leaves its items pending
with their shard number: the shard is later written again, whole, from the same
items, so no key ever lands in two shards.
"""

import asyncio
import contextlib
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.durable import DiskFailed
from bulkforge.daemon.errors import InvalidArgument, Refused
from bulkforge.daemon.failures import attempt_logger
from bulkforge.daemon.governor import give_back_memory
from bulkforge.daemon.machines import TransitionConflict
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.pipeline import JobLoop, Services
from bulkforge.daemon.scenes import records
from bulkforge.daemon.scenes.fetch import ItemFetcher, RetryLater
from bulkforge.daemon.scenes.machine import SceneState
from bulkforge.daemon.scenes.request import ScenesRequest
from bulkforge.daemon.scenes.shards import FAILED, SUCCESS, Outcome, ShardWriter
from bulkforge.daemon.scenes.steps import (
    DECODE,
    IMAGE_SIZE,
    Step,
    StepFailed,
    load_steps,
    run_after_fetch,
)
from bulkforge.daemon.store import StoreFatal

if TYPE_CHECKING:
    from bulkforge.daemon.scenes.items import Input

# Outcomes gathered before one thread hop streams them into the shard's files.
FLUSH_BYTES = 4 * 1024**2
FLUSH_ITEMS = 512
# Shards in flight per job: at least two, so the next one runs while one drains its
# slowest items; more while they hold fewer items than twice the connections.
MIN_SHARDS, MAX_SHARDS = 2, 64
# A shard whose writing fails (a full disk, a bug) is tried again after 2, 4 s, then the job fails.
SHARD_RETRY_S = 1.0
SHARD_ATTEMPTS = 3
# An error message is kept to this many characters (a plug-in may raise with anything).
MAX_ERROR = 2000


@dataclass
class _Job:
    """What running a job's items needs, prepared once per daemon run."""

    request: ScenesRequest
    steps: list[Step]
    # The input, opened and checked (it must stay until the job has ended).
    source: "Input"


@dataclass
class _ShardRun:
    job_id: int
    shard: int
    ids: list[int]
    remaining: int
    task: asyncio.Task | None = None
    finished: list[records.Finished] = field(default_factory=list)


@dataclass
class _Collected:
    outcomes: list[Outcome] = field(default_factory=list)
    finished: list[records.Finished] = field(default_factory=list)
    buffered: int = 0


class Scenes(JobLoop):
    kind_name = records.KIND

    def __init__(self, services: Services):
        super().__init__(services)
        settings = services.settings
        self._settings = settings
        self._governor = services.governor
        self._writer = services.store.writer
        self._transfers = services.transfers
        self._prepared: dict[int, _Job] = {}
        self._runs: dict[tuple[int, int], _ShardRun] = {}
        self._registrars: dict[int, asyncio.Task] = {}
        self._fetcher = ItemFetcher(services.transfers, settings)
        # (job, shard) -> (failed writes, monotonic time before which it is not retried)
        self._shard_errors: dict[tuple[int, int], tuple[int, float]] = {}

    # -- what others ask of the pipeline -------------------------------------------------

    @property
    def active_transfers(self) -> int:
        """Items being fetched now (each holds a connection)."""
        return self._transfers.budget.busy(records.KIND)

    def in_flight_bytes(self, job_id: int) -> int:
        """A shard's bytes count once it is written: nothing is counted before."""
        return 0

    def stop_job(self, job_id: int, cancelled: bool) -> None:
        """Interrupt a paused or cancelled job: its shards' items go back to pending.

        A paused job's input goes on being registered (bookkeeping, no fetching), so
        its status shows the whole job; a cancelled job's stops.
        """
        for run in list(self._runs.values()):
            if run.job_id == job_id and run.task is not None:
                run.task.cancel()
        if cancelled:
            self.forget_job(job_id)

    def forget_job(self, job_id: int) -> None:
        """Its registration stops; its prepared steps and shard cooldowns go."""
        if job_id in self._registrars:
            self._registrars[job_id].cancel()
        self._prepared.pop(job_id, None)
        for key in [key for key in self._shard_errors if key[0] == job_id]:
            del self._shard_errors[key]

    async def drain(self, timeout: float) -> None:
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        await self._stop_tasks(tasks + list(self._registrars.values()), timeout)

    # -- the loop --------------------------------------------------------------------------

    async def _schedule_job(self, job: jobs.JobRow) -> None:
        prepared = await self._prepare(job)
        if prepared is None:
            return
        if job.state == JobState.QUEUED:
            job = await self._writer.call(lambda conn: jobs.start_job(conn, job))
        progress = await self._readers.call(lambda conn: records.registration(conn, job.id))
        assert progress is not None
        if not progress.done and job.id not in self._registrars:
            with jobs.working_on(job):
                task = asyncio.create_task(
                    self._register(job, prepared), name=f"register {job.name}"
                )
            self._registrars[job.id] = task
        held = self._governor.memory_hold() or await asyncio.to_thread(
            self._governor.disk_hold, prepared.request.dest
        )
        self._governor.note_hold(job.name, held)
        while not held and not self._stopping and self._wants_shard(job.id, prepared):
            busy = {run.shard for run in self._runs.values() if run.job_id == job.id}
            busy |= self._cooling(job.id)
            claimed = await self._writer.call(
                lambda conn, busy=busy: records.claim_shard(
                    conn, job.id, prepared.request.shard_size, not progress.done, busy
                )
            )
            if claimed is None:
                break
            if self._stopping:  # drained while claiming: give the items back
                await self._release([item.id for item in claimed.items])
                return
            self._start_shard(job, prepared, claimed)
        if not self._busy(job.id):
            await self._writer.call(lambda conn: _finish_if_done(conn, job.id))

    def _cooling(self, job_id: int) -> set[int]:
        """Shards of the job that failed to be written and wait before their next try."""
        now = time.monotonic()
        return {
            shard
            for (job, shard), (_, until) in self._shard_errors.items()
            if job == job_id and until > now
        }

    def _wants_shard(self, job_id: int, prepared: _Job) -> bool:
        runs = [run for run in self._runs.values() if run.job_id == job_id]
        waiting = sum(run.remaining for run in runs)
        if len(runs) >= MAX_SHARDS:
            return False
        return len(runs) < MIN_SHARDS or waiting < 2 * self._governor.max_connections

    def _busy(self, job_id: int) -> bool:
        return job_id in self._registrars or any(r.job_id == job_id for r in self._runs.values())

    async def _prepare(self, job: jobs.JobRow) -> _Job | None:
        """The job's request and steps; a plug-in that no longer imports fails the job."""
        if job.id in self._prepared:
            return self._prepared[job.id]
        # Arrow is loaded with the first job that runs, not by an idle bfd.
        from bulkforge.daemon.scenes.items import Input

        try:
            request = ScenesRequest.of_spec(job.name, json.loads(job.spec))
            offered = self._settings.plugin_steps
            steps = await asyncio.to_thread(load_steps, list(request.steps), offered)
            source = await asyncio.to_thread(Input, request.input, request.columns)
        except (Refused, KeyError, TypeError, ValueError) as exc:
            message = (
                str(exc)
                if isinstance(exc, Refused)
                else f"the job's stored parameters are unreadable ({exc!r})"
            )
            await self._writer.call(lambda conn: jobs.fail_live_job(conn, job.id, message))
            return None
        self._prepared[job.id] = _Job(request, steps, source)
        return self._prepared[job.id]

    # -- registration ----------------------------------------------------------------------

    async def _register(self, job: jobs.JobRow, prepared: _Job) -> None:
        """Register the rest of the input, a chunk per commit, from where it stopped.

        The next chunk is read while the writer inserts this one: the store, not the
        Parquet, sets the pace.
        """
        try:
            progress = await self._readers.call(lambda conn: records.registration(conn, job.id))
            assert progress is not None
            _check_unchanged(prepared, progress.rows_total)
            chunks = prepared.source.chunks(progress.rows_read)
            at = progress.rows_read
            reading = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
            while (chunk := await reading) is not None:
                reading = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
                await self._writer.call(
                    lambda conn, chunk=chunk, at=at: records.register_chunk(conn, job.id, chunk, at)
                )
                at += chunk.read
                del chunk
                await asyncio.to_thread(give_back_memory)
                self.wake()
            await self._writer.call(lambda conn: records.finish_registration(conn, job.id))
            logger.info("job {}: input registered ({:,} rows)", job.name, at)
        except asyncio.CancelledError:
            raise
        except StoreFatal:
            return
        except Exception as exc:  # a corrupt row group, a vanished file: the job, not bfd
            if not isinstance(exc, Refused):
                logger.opt(exception=exc).error("job {}: registering the input failed", job.name)
            message = f"registering the input failed: {exc}"
            await self._writer.call(lambda conn: jobs.fail_live_job(conn, job.id, message))
        finally:
            self._registrars.pop(job.id, None)
            self.wake()

    # -- one shard -------------------------------------------------------------------------

    def _start_shard(self, job: jobs.JobRow, prepared: _Job, claimed: records.Claimed) -> None:
        ids = [item.id for item in claimed.items]
        run = _ShardRun(job.id, claimed.shard, ids, len(ids))
        key = (job.id, claimed.shard)
        self._runs[key] = run
        with jobs.working_on(job):
            run.task = asyncio.create_task(self._run_shard(job, prepared, claimed, run))
        run.task.add_done_callback(lambda task: self._shard_ended(key, run, task))

    def _shard_ended(self, key: tuple[int, int], run: _ShardRun, task: asyncio.Task) -> None:
        if self._runs.get(key) is run:
            del self._runs[key]
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            self._in_background(self._release(run.ids))
        if isinstance(error, DiskFailed):  # its items went back; the job is held
            self._governor.disk_failed(run.job_id, error)
        elif isinstance(error, TransitionConflict):  # cancelled as it was written: it ended
            logger.debug("scenes: shard {} of job {} ended meanwhile", run.shard, run.job_id)
        elif error is not None and not isinstance(error, StoreFatal):
            self._shard_failed(key, run, error)
        self.wake()

    def _shard_failed(self, key: tuple[int, int], run: _ShardRun, error: BaseException) -> None:
        """A shard that could not be written waits and tries again; a third failure ends the job."""
        failures = self._shard_errors.get(key, (0, 0.0))[0] + 1
        self._shard_errors[key] = (failures, time.monotonic() + SHARD_RETRY_S * 2**failures)
        attempt_logger(error).error(
            "scenes: shard {} of job {} could not be written (attempt {}): {}; its items go "
            "back to pending",
            run.shard,
            run.job_id,
            failures,
            error,
        )
        if failures >= SHARD_ATTEMPTS:
            message = f"shard {run.shard} could not be written {failures} times: {error!r}"
            self._in_background(
                self._writer.call(lambda conn: jobs.fail_live_job(conn, run.job_id, message))
            )

    async def _release(self, ids: list[int]) -> None:
        with contextlib.suppress(StoreFatal):
            await self._writer.call(lambda conn: records.ITEMS.release(conn, ids))

    async def _run_shard(
        self, job: jobs.JobRow, prepared: _Job, claimed: records.Claimed, run: _ShardRun
    ) -> None:
        """Fill the shard, then make it durable and commit it; only filling can be interrupted.

        Every call into the shard's writer runs on one thread of its own, in order, so
        giving the shard up waits for a write in progress instead of racing it.
        """
        request = prepared.request
        kept = prepared.source.kept
        measured = IMAGE_SIZE if DECODE in request.steps else ()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard") as thread:
            loop = asyncio.get_running_loop()
            writer = await loop.run_in_executor(
                thread, ShardWriter, request.dest, claimed.shard, request.format, kept, measured
            )
            try:
                await self._fill(writer, thread, prepared, claimed, run)
            except BaseException:
                await asyncio.shield(loop.run_in_executor(thread, writer.close_and_abandon))
                raise
            # Once every item has ended the shard is finished even if the job is paused now:
            # a cancel waits for it, so no second run of this shard can start beside it.
            completion = asyncio.ensure_future(self._complete(job, writer, thread, run))
            try:
                await asyncio.shield(completion)
            except asyncio.CancelledError:
                await completion
                raise

    async def _complete(
        self, job: jobs.JobRow, writer: ShardWriter, thread: ThreadPoolExecutor, run: _ShardRun
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            written = await loop.run_in_executor(thread, writer.finish)
        except BaseException:
            await loop.run_in_executor(thread, writer.close_and_abandon)
            raise
        finished = run.finished
        await self._writer.call(
            lambda conn: records.finish_shard(conn, job.id, run.shard, finished, written.bytes)
        )
        self._shard_errors.pop((job.id, run.shard), None)
        logger.info(
            "job {}: shard {} written ({} ok, {} failed)",
            job.name,
            writer.name,
            written.successes,
            written.failures,
        )

    async def _fill(
        self,
        writer: ShardWriter,
        thread: ThreadPoolExecutor,
        prepared: _Job,
        claimed: records.Claimed,
        run: _ShardRun,
    ) -> None:
        """Run every item of the shard, streaming outcomes into the writer as they end."""
        loop = asyncio.get_running_loop()
        backlog = _Backlog(claimed.items)
        collected = _Collected()
        run.finished = collected.finished

        async def flush() -> None:
            batch, collected.outcomes = collected.outcomes, []
            collected.buffered = 0
            if batch:
                await loop.run_in_executor(thread, _add_and_trim, writer, batch)

        async def work() -> None:
            while (entry := await backlog.next()) is not None:
                item, tried = entry
                try:
                    outcome, finished = await self._process(prepared, item, tried)
                except RetryLater as again:
                    backlog.later(item, again)
                    continue
                run.remaining -= 1
                collected.outcomes.append(outcome)
                collected.finished.append(finished)
                collected.buffered += len(outcome.data or b"")
                if collected.buffered >= FLUSH_BYTES or len(collected.outcomes) >= FLUSH_ITEMS:
                    await flush()

        # A TaskGroup: when one worker fails, the others are cancelled and awaited.
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(len(backlog), self._governor.max_connections)):
                    group.create_task(work())
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        finally:
            backlog.close()
        await flush()

    async def _process(
        self, prepared: _Job, item: records.ItemRow, tried: int
    ) -> tuple[Outcome, records.Finished]:
        """One item through its steps: its outcome for the shard and its row for the store.

        RetryLater when its fetch is to be tried again after a wait.
        """
        try:
            return await self._run_steps(prepared, item, tried)
        except StepFailed as failed:
            return _failure(item, failed, item.attempts + failed.attempts)
        except RetryLater:
            raise
        except Exception as exc:  # a bug or odd input must fail this item, not its shard
            logger.opt(exception=exc).warning("scenes: item {} failed unexpectedly", item.key)
            failed = StepFailed("internal", type(exc).__name__, f"{type(exc).__name__}: {exc}")
            return _failure(item, failed, item.attempts + 1)

    async def _run_steps(
        self, prepared: _Job, item: records.ItemRow, tried: int
    ) -> tuple[Outcome, records.Finished]:
        request = prepared.request
        kept = item.kept()
        fetched = await self._fetcher.fetch(item.url, request.max_size, request.timeout_s, tried)
        fetched_at = time.time()
        data, meta = fetched.data, {"key": item.key, "url": item.url, **kept}
        if len(prepared.steps) > 1:
            data, meta = await asyncio.to_thread(run_after_fetch, prepared.steps, data, meta)
        outcome = Outcome(
            item.key,
            kept,
            SUCCESS,
            data=data,
            extension=fetched.extension,
            meta=meta,
            fetched_at=fetched_at,
        )
        attempts = item.attempts + fetched.attempts
        return outcome, records.Finished(item.id, SceneState.DONE, attempts, size=len(data))


class _Backlog:
    """A shard's items still to run. An item to be tried again is put aside for its
    backoff and comes back after it, so its wait holds neither a connection nor one
    of the shard's workers."""

    def __init__(self, items: list[records.ItemRow]):
        # (item, attempts already made in this run)
        self._ready: deque[tuple[records.ItemRow, int]] = deque((item, 0) for item in items)
        self._later: set[asyncio.TimerHandle] = set()
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._ready)

    async def next(self) -> tuple[records.ItemRow, int] | None:
        """The next item to run, waiting for one put aside; None once none is left."""
        while not self._ready:
            if not self._later:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        return self._ready.popleft()

    def later(self, item: records.ItemRow, again: RetryLater) -> None:
        def back() -> None:
            self._later.discard(handle)
            self._ready.append((item, again.attempts))
            self._arrived.set()

        handle = asyncio.get_running_loop().call_later(again.delay, back)
        self._later.add(handle)

    def close(self) -> None:
        for handle in self._later:
            handle.cancel()
        self._later.clear()


def _failure(
    item: records.ItemRow, failed: StepFailed, attempts: int
) -> tuple[Outcome, records.Finished]:
    error = str(failed)[:MAX_ERROR]
    outcome = Outcome(
        item.key,
        item.kept(),
        FAILED,
        step=failed.step,
        error_class=failed.error_class,
        error=error,
    )
    row = records.Finished(
        item.id,
        SceneState.FAILED,
        attempts,
        step=failed.step,
        error_class=failed.error_class,
        error=error,
    )
    return outcome, row


def _check_unchanged(prepared: _Job, rows_total: int) -> None:
    """The input still has the rows it had at submit: registration resumes by row number."""
    request, now = prepared.request, prepared.source.rows_total
    if now != rows_total:
        raise InvalidArgument(
            f"{request.input} changed since the job was submitted ({rows_total:,} rows "
            f"then, {now:,} now); submit it again under a new name"
        )


def _finish_if_done(conn: apsw.Connection, job_id: int) -> None:
    """Complete (or fail, when items failed) a job whose input is in and items all ended."""
    job = jobs.job_by_id(conn, job_id)
    progress = records.registration(conn, job_id)
    if job is None or job.state != JobState.RUNNING or progress is None or not progress.done:
        return
    if records.ITEMS.unfinished(conn, job_id):
        return
    failed = records.ITEMS.failed(conn, job_id)
    skipped = f"; {progress.rejected:,} input row(s) skipped" if progress.rejected else ""
    if failed:
        message = f"{failed:,} item(s) failed; `bfctl failures {job.name}` lists them{skipped}"
        jobs.move_job(conn, job, JobState.FAILED, message=message)
        jobs.log_about(job).warning("job {} ended with failures: {}", job.name, message)
        return
    jobs.move_job(conn, job, JobState.COMPLETED, message=skipped.lstrip("; "))
    logger.info("job {} completed", job.name)


def _add_and_trim(writer: ShardWriter, outcomes: list[Outcome]) -> None:
    """Stream outcomes into the shard, then hand the heap pages their bodies held back.

    Bodies pass through bfd's heap by the thousand (20 KiB each for thumbnails, above
    pymalloc's sizes): without a trim glibc keeps the freed pages, and bfd's RSS grew to
    ~380 MB during a 100,000-item run; trimmed after every flush it stays near 240 MB.
    """
    writer.add(outcomes)
    outcomes.clear()
    give_back_memory()
