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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.downloader.fetch import origin_session
from bulkforge.daemon.errors import InvalidArgument, Refused
from bulkforge.daemon.governor import Governor, give_back_memory
from bulkforge.daemon.machines.job import JobState
from bulkforge.daemon.machines.scene import SceneState
from bulkforge.daemon.scenes import records
from bulkforge.daemon.scenes.fetch import ItemFetcher
from bulkforge.daemon.scenes.items import Input
from bulkforge.daemon.scenes.request import ScenesRequest
from bulkforge.daemon.scenes.shards import FAILED, SUCCESS, Outcome, ShardWriter
from bulkforge.daemon.scenes.steps import Step, StepFailed, load_steps, run_after_fetch
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.store import Store, StoreFatal

IDLE_POLL_S = 1.0
# Outcomes gathered before one thread hop streams them into the shard's files.
FLUSH_BYTES = 4 * 1024**2
FLUSH_ITEMS = 512
# Shards in flight per job: at least two, so the next one runs while one drains its
# slowest items; more while they hold fewer items than twice the connections.
MIN_SHARDS, MAX_SHARDS = 2, 64


@dataclass
class _Job:
    """What running a job's items needs, prepared once per daemon run."""

    request: ScenesRequest
    steps: list[Step]
    source: Input | None = None


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


class Scenes:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        governor: Governor,
        on_fatal: Callable[[BaseException], None],
    ):
        self._settings = settings
        self._governor = governor
        self._writer = store.writer
        self._readers = store.readers
        self._on_fatal = on_fatal
        self._wake = asyncio.Event()
        self._stopping = False
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._prepared: dict[int, _Job] = {}
        self._runs: dict[tuple[int, int], _ShardRun] = {}
        self._registrars: dict[int, asyncio.Task] = {}
        self._releases: set[asyncio.Future] = set()
        self._fetcher: ItemFetcher | None = None

    # -- what others ask of the pipeline -------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    @property
    def items_in_flight(self) -> int:
        return sum(run.remaining for run in self._runs.values())

    def stop_job(self, job_id: int, cancelled: bool) -> None:
        """Interrupt a paused or cancelled job: its shards' items go back to pending.

        A paused job's input goes on being registered (bookkeeping, no fetching), so
        its status shows the whole job; a cancelled job's stops.
        """
        for run in list(self._runs.values()):
            if run.job_id == job_id and run.task is not None:
                run.task.cancel()
        if cancelled and job_id in self._registrars:
            self._registrars[job_id].cancel()
            self._prepared.pop(job_id, None)

    async def drain(self, timeout: float) -> None:
        self._stopping = True
        self.wake()
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        tasks += list(self._registrars.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._releases:
            await asyncio.wait(list(self._releases), timeout=timeout)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        settings = self._settings
        async with origin_session(settings) as session:
            self._fetcher = ItemFetcher(session, settings, self._governor.bandwidth)
            while not self._stopping:
                self._wake.clear()
                try:
                    await self._schedule()
                except StoreFatal:
                    return
                except Exception:
                    logger.exception("scenes: a scheduling pass failed; retrying in 1 s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)

    async def _schedule(self) -> None:
        live = await self._readers.call(
            lambda conn: jobs.jobs_in_states(conn, (JobState.QUEUED, JobState.RUNNING))
        )
        for job in live:
            if self._stopping:
                return
            if job.kind == "scenes":
                await self._schedule_job(job)

    async def _schedule_job(self, job: jobs.JobRow) -> None:
        prepared = await self._prepare(job)
        if prepared is None:
            return
        if job.state == JobState.QUEUED:
            job = await self._writer.call(lambda conn: _start_job(conn, job))
        progress = await self._readers.call(lambda conn: records.registration(conn, job.id))
        assert progress is not None
        if not progress.done and job.id not in self._registrars:
            task = asyncio.create_task(self._register(job, prepared), name=f"register {job.name}")
            self._registrars[job.id] = task
        held = self._governor.memory_hold()
        self._note_hold(job, held)
        while not held and not self._stopping and self._wants_shard(job.id, prepared):
            busy = {run.shard for run in self._runs.values() if run.job_id == job.id}
            claimed = await self._writer.call(
                lambda conn, busy=busy: records.claim_shard(
                    conn, job.id, prepared.request.shard_size, not progress.done, busy
                )
            )
            if claimed is None:
                break
            self._start_shard(job, prepared, claimed)
        if not self._busy(job.id):
            await self._writer.call(lambda conn: _finish_if_done(conn, job.id))

    def _wants_shard(self, job_id: int, prepared: _Job) -> bool:
        runs = [run for run in self._runs.values() if run.job_id == job_id]
        waiting = sum(run.remaining for run in runs)
        if len(runs) >= MAX_SHARDS:
            return False
        return len(runs) < MIN_SHARDS or waiting < 2 * self._settings.max_connections

    def _busy(self, job_id: int) -> bool:
        return job_id in self._registrars or any(r.job_id == job_id for r in self._runs.values())

    def _note_hold(self, job: jobs.JobRow, held: str | None) -> None:
        if held:
            self._governor.holds[job.name] = held
        else:
            self._governor.holds.pop(job.name, None)

    async def _prepare(self, job: jobs.JobRow) -> _Job | None:
        """The job's request and steps; a plug-in that no longer imports fails the job."""
        if job.id in self._prepared:
            return self._prepared[job.id]
        try:
            request = ScenesRequest.of_spec(job.name, json.loads(job.spec))
            steps = await asyncio.to_thread(load_steps, list(request.steps))
        except (KeyError, TypeError, ValueError) as exc:
            message = f"the job's stored parameters are unreadable ({exc!r})"
            await self._writer.call(lambda conn: _fail_job(conn, job.id, message))
            return None
        except Refused as exc:
            message = str(exc)
            await self._writer.call(lambda conn: _fail_job(conn, job.id, message))
            return None
        self._prepared[job.id] = _Job(request, steps)
        return self._prepared[job.id]

    # -- registration ----------------------------------------------------------------------

    async def _register(self, job: jobs.JobRow, prepared: _Job) -> None:
        """Register the rest of the input, a chunk per commit, from where it stopped."""
        try:
            progress = await self._readers.call(lambda conn: records.registration(conn, job.id))
            assert progress is not None
            source = await self._source(prepared, progress.rows_total)
            chunks = source.chunks(progress.rows_read)
            at = progress.rows_read
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                await self._writer.call(
                    lambda conn, chunk=chunk, at=at: records.register_chunk(conn, job.id, chunk, at)
                )
                at += chunk.read
                del chunk
                await asyncio.to_thread(give_back_memory)
                self.wake()
            await self._writer.call(lambda conn: records.finish_registration(conn, job.id))
            logger.info("job {}: input registered ({:,} rows)", job.name, at)
        except Refused as exc:
            message = f"registering the input failed: {exc}"
            await self._writer.call(lambda conn: _fail_job(conn, job.id, message))
        finally:
            self._registrars.pop(job.id, None)
            self.wake()

    async def _source(self, prepared: _Job, rows_total: int) -> Input:
        request = prepared.request
        source = await asyncio.to_thread(Input, request.input, request.columns)
        if source.rows_total != rows_total:
            raise InvalidArgument(
                f"{request.input} changed since the job was submitted ({rows_total:,} rows "
                f"then, {source.rows_total:,} now); submit it again under a new name"
            )
        return source

    # -- one shard -------------------------------------------------------------------------

    def _start_shard(self, job: jobs.JobRow, prepared: _Job, claimed: records.Claimed) -> None:
        ids = [item.id for item in claimed.items]
        run = _ShardRun(job.id, claimed.shard, ids, len(ids))
        key = (job.id, claimed.shard)
        self._runs[key] = run
        run.task = asyncio.create_task(self._run_shard(job, prepared, claimed, run))
        run.task.add_done_callback(lambda task: self._shard_ended(key, run, task))

    def _shard_ended(self, key: tuple[int, int], run: _ShardRun, task: asyncio.Task) -> None:
        if self._runs.get(key) is run:
            del self._runs[key]
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled() and not isinstance(task.exception(), StoreFatal):
                logger.opt(exception=task.exception()).error(
                    "scenes: shard {} of job {} failed; its items go back to pending",
                    run.shard,
                    run.job_id,
                )
            release = asyncio.ensure_future(self._release(run.ids))
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)
        self.wake()

    async def _release(self, ids: list[int]) -> None:
        with contextlib.suppress(StoreFatal):
            await self._writer.call(lambda conn: records.release(conn, ids))

    async def _run_shard(
        self, job: jobs.JobRow, prepared: _Job, claimed: records.Claimed, run: _ShardRun
    ) -> None:
        request = prepared.request
        if prepared.source is None:
            prepared.source = await asyncio.to_thread(Input, request.input, request.columns)
        kept = prepared.source.kept
        writer = await asyncio.to_thread(
            ShardWriter, request.dest, claimed.shard, request.format, kept
        )
        try:
            await self._fill(writer, prepared, claimed, run)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(writer.close_and_abandon))
            raise
        written = await asyncio.to_thread(writer.finish)
        finished = run.finished
        await self._writer.call(
            lambda conn: records.finish_shard(conn, job.id, claimed.shard, finished, written.bytes)
        )
        logger.info(
            "job {}: shard {} written ({} ok, {} failed)",
            job.name,
            writer.name,
            written.successes,
            written.failures,
        )

    async def _fill(
        self, writer: ShardWriter, prepared: _Job, claimed: records.Claimed, run: _ShardRun
    ) -> None:
        """Run every item of the shard, streaming outcomes into the writer as they end."""
        queue = deque(claimed.items)
        collected = _Collected()
        run.finished = collected.finished
        lock = asyncio.Lock()

        async def flush() -> None:
            async with lock:
                batch, collected.outcomes = collected.outcomes, []
                collected.buffered = 0
                if batch:
                    await asyncio.to_thread(writer.add, batch)

        async def work() -> None:
            while queue:
                item = queue.popleft()
                outcome, finished = await self._process(prepared, item)
                run.remaining -= 1
                collected.outcomes.append(outcome)
                collected.finished.append(finished)
                collected.buffered += len(outcome.data or b"")
                if collected.buffered >= FLUSH_BYTES or len(collected.outcomes) >= FLUSH_ITEMS:
                    await flush()

        workers = min(len(queue), self._settings.max_connections)
        await asyncio.gather(*(work() for _ in range(workers)))
        await flush()

    async def _process(
        self, prepared: _Job, item: records.ItemRow
    ) -> tuple[Outcome, records.Finished]:
        """One item through its steps: its outcome for the shard and its row for the store."""
        assert self._fetcher is not None
        request = prepared.request
        kept = item.kept()
        try:
            async with self._slots:
                fetched = await self._fetcher.fetch(item.url, request.max_size, request.timeout_s)
            attempts = item.attempts + fetched.attempts
            data, meta = fetched.data, {"key": item.key, "url": item.url, **kept}
            if len(prepared.steps) > 1:
                data, meta = await asyncio.to_thread(run_after_fetch, prepared.steps, data, meta)
        except StepFailed as failed:
            error = str(failed)
            outcome = Outcome(
                item.key,
                kept,
                FAILED,
                step=failed.step,
                error_class=failed.error_class,
                error=error,
            )
            row = records.Finished(
                item.id,
                SceneState.FAILED,
                item.attempts + failed.attempts,
                step=failed.step,
                error_class=failed.error_class,
                error=error,
            )
            return outcome, row
        outcome = Outcome(
            item.key, kept, SUCCESS, data=data, extension=fetched.extension, meta=meta
        )
        return outcome, records.Finished(item.id, SceneState.DONE, attempts, size=len(data))


def _start_job(conn: apsw.Connection, job: jobs.JobRow) -> jobs.JobRow:
    job = jobs.move_job(conn, job, JobState.RUNNING, message="")
    logger.info("job {} started", job.name)
    return job


def _fail_job(conn: apsw.Connection, job_id: int, message: str) -> None:
    job = jobs.job_by_id(conn, job_id)
    if job is None or job.state not in (JobState.QUEUED, JobState.RUNNING):
        return
    if job.state == JobState.QUEUED:
        job = jobs.move_job(conn, job, JobState.RUNNING)
    jobs.move_job(conn, job, JobState.FAILED, message=message)
    logger.error("job {} failed: {}", job.name, message)


def _finish_if_done(conn: apsw.Connection, job_id: int) -> None:
    """Complete (or fail, when items failed) a job whose input is in and items all ended."""
    job = jobs.job_by_id(conn, job_id)
    progress = records.registration(conn, job_id)
    if job is None or job.state != JobState.RUNNING or progress is None or not progress.done:
        return
    if records.has_unfinished(conn, job_id):
        return
    failed = records.failed_count(conn, job_id)
    skipped = f"; {progress.rejected:,} input row(s) skipped" if progress.rejected else ""
    if failed:
        message = f"{failed:,} item(s) failed; `bfctl failures {job.name}` lists them{skipped}"
        jobs.move_job(conn, job, JobState.FAILED, message=message)
        logger.warning("job {} ended with failures: {}", job.name, message)
        return
    jobs.move_job(conn, job, JobState.COMPLETED, message=skipped.lstrip("; "))
    logger.info("job {} completed", job.name)
