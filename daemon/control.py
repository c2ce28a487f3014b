"""The verbs of the control API, on the store and the pipelines; the servicer only translates."""

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.disks import identify
from bulkforge.daemon.downloader import batches, files, verify
from bulkforge.daemon.downloader.incremental import sizes_on_disk, skip_unchanged
from bulkforge.daemon.downloader.listing import DownloadRequest, source_pages
from bulkforge.daemon.downloader.scheduler import Downloader
from bulkforge.daemon.errors import FailedPrecondition, InvalidArgument
from bulkforge.daemon.machines.job import TERMINAL, JobState
from bulkforge.daemon.planner import Space
from bulkforge.daemon.scenes import export, records
from bulkforge.daemon.scenes.items import Input, ItemChunk
from bulkforge.daemon.scenes.pipeline import Scenes
from bulkforge.daemon.scenes.request import ScenesRequest
from bulkforge.daemon.scenes.steps import load_steps
from bulkforge.daemon.store import Store, StoreFatal, now_ms


@dataclass
class Stats:
    view: jobs.JobView
    throughput: list[tuple[int, int, int]]
    failures: list[files.FailureGroupRow]
    elapsed_s: float
    items_per_s: float
    bytes_per_s: float
    bucket_s: int = 60


@dataclass
class FailureReport:
    groups: list[files.FailureGroupRow]
    failures: list[files.FailureRow] = field(default_factory=list)
    total: int = 0


class Control:
    def __init__(self, store: Store, downloader: Downloader, scenes: Scenes):
        self._writer = store.writer
        self._readers = store.readers
        self._downloader = downloader
        self._scenes = scenes

    def _wake(self) -> None:
        self._downloader.wake()
        self._scenes.wake()

    # -- reads -----------------------------------------------------------------------------

    async def status(self, name: str) -> jobs.JobView:
        view = await self._readers.call(lambda c: jobs.job_view(c, jobs.get_job(c, name)))
        return self._with_in_flight(view)

    async def list(self) -> list[jobs.JobView]:
        views = await self._readers.call(
            lambda c: [jobs.job_view(c, job) for job in jobs.all_jobs(c)]
        )
        return [self._with_in_flight(view) for view in views]

    def _with_in_flight(self, view: jobs.JobView) -> jobs.JobView:
        """Count the bytes of transfers under way, so progress moves between files."""
        view.bytes_done += self._downloader.in_flight_bytes(view.job.id)
        if view.bytes_total:
            view.bytes_done = min(view.bytes_done, view.bytes_total)
        return view

    async def failures(self, name: str, step: str, limit: int) -> FailureReport:
        def read(conn: apsw.Connection) -> FailureReport:
            job = jobs.get_job(conn, name)
            if job.kind == "scenes":
                return _scene_failures(conn, job.id, step, limit)
            groups = files.failure_groups(conn, job.id, step)
            report = FailureReport(groups, files.failures(conn, job.id, step, limit))
            report.total = sum(group.count for group in groups)
            return report

        return await self._readers.call(read)

    async def stats(self, name: str) -> Stats:
        def read(conn: apsw.Connection) -> tuple[jobs.JobView, list, list, int]:
            job = jobs.get_job(conn, name)
            view = jobs.job_view(conn, job)
            if job.kind == "scenes":
                bucket = _bucket_ms(view.job)
                throughput = records.throughput(conn, job.id, bucket)
                groups = _scene_failures(conn, job.id, "", 0).groups
                return view, throughput, groups, bucket
            return (
                view,
                files.throughput(conn, job.id),
                files.failure_groups(conn, job.id),
                60_000,
            )

        view, throughput, groups, bucket = await self._readers.call(read)
        finished = view.job.updated_at if view.job.state in TERMINAL else now_ms()
        elapsed = max(0.001, (finished - view.job.created_at) / 1000)
        items = sum(row[1] for row in throughput)
        size = sum(row[2] for row in throughput)
        return Stats(
            view, throughput, groups, elapsed, items / elapsed, size / elapsed, bucket // 1000
        )

    # -- writes ----------------------------------------------------------------------------

    async def submit_download(self, request: DownloadRequest) -> tuple[jobs.JobView, bool]:
        await asyncio.to_thread(_prepare_dest, request.dest)
        spec = request.spec()
        # A resubmission answers at once, without listing the source again.
        existing = await self._readers.call(lambda c: jobs.existing_job(c, request.name, spec))
        if existing is not None:
            return await self.status(existing.name), False
        space = await asyncio.to_thread(_space_of, request)
        table = f"staged_{uuid.uuid4().hex}"
        await self._writer.call(lambda c: jobs.stage_open(c, table))
        try:
            pages = _with_sizes_on_disk(source_pages(request.source), request.dest)
            while (staged := await asyncio.to_thread(next, pages, None)) is not None:
                await self._writer.call(lambda c, staged=staged: jobs.stage_rows(c, table, *staged))
            job, created = await self._writer.call(
                lambda c: _create_download_job(c, request, spec, table, space)
            )
        finally:
            with contextlib.suppress(StoreFatal):
                await self._writer.call(lambda c: jobs.stage_drop(c, table))
        if created:
            self._downloader.wake()
        return await self.status(job.name), created

    async def submit_scenes(self, request: ScenesRequest) -> tuple[jobs.JobView, bool]:
        await asyncio.to_thread(_prepare_dest, request.dest)
        spec = request.spec()
        existing = await self._readers.call(lambda c: jobs.existing_job(c, request.name, spec))
        if existing is not None:
            return await self.status(existing.name), False
        # Plug-ins are imported now: one that does not import refuses the job, not its items.
        await asyncio.to_thread(load_steps, list(request.steps))
        rows_total, first = await asyncio.to_thread(_first_chunk, request)
        job, created = await self._writer.call(
            lambda c: jobs.create_scenes_job(
                c, request.name, spec, str(request.dest), rows_total, first
            )
        )
        if created:
            self._scenes.wake()
        return await self.status(job.name), created

    async def export(self, name: str, dest: Path) -> export.Exported:
        await asyncio.to_thread(_prepare_dest, dest)

        def write(conn: apsw.Connection) -> export.Exported:
            job = jobs.get_job(conn, name)
            if job.kind != "scenes":
                raise FailedPrecondition(
                    f"job {name!r} is a {job.kind} job; export writes the items of a scenes job"
                )
            return export.write(conn, job, dest)

        # One read transaction: the three files describe the same moment.
        return await self._readers.call(write)

    async def pause(self, name: str) -> jobs.JobView:
        job = await self._move(name, JobState.PAUSED, "pause")
        self._stop_job(job.id, cancelled=False)
        return await self.status(name)

    async def resume(self, name: str) -> jobs.JobView:
        await self._move(name, JobState.RUNNING, "resume", only_from=JobState.PAUSED)
        self._wake()
        return await self.status(name)

    async def cancel(self, name: str) -> jobs.JobView:
        job = await self._move(name, JobState.CANCELLED, "cancel", message="cancelled")
        self._stop_job(job.id, cancelled=True)
        return await self.status(name)

    async def retry(self, name: str, step: str, error: str) -> tuple[jobs.JobView, int]:
        def requeue(conn: apsw.Connection) -> int:
            job = jobs.get_job(conn, name)
            if job.state == JobState.CANCELLED:
                raise FailedPrecondition(
                    f"cannot retry job {name!r}: it was cancelled; submit it again under a new name"
                )
            if job.kind == "scenes":
                retried = records.retry_failed(conn, job.id, step, error)
            else:
                retried = files.retry_failed(conn, job.id, step, error)
                batches.reopen_retried(conn, job.id)
            if retried and job.state == JobState.FAILED:
                jobs.move_job(conn, job, JobState.QUEUED, message="")
            return retried

        retried = await self._writer.call(requeue)
        self._wake()
        return await self.status(name), retried

    async def continue_job(self, name: str) -> jobs.JobView:
        await self._readers.call(lambda conn: _download_job(conn, name, "continue"))
        await self._writer.call(lambda conn: batches.continue_job(conn, name))
        self._downloader.wake()
        return await self.status(name)

    async def swap(self, name: str, dest: Path | None) -> tuple[jobs.JobView, batches.Swapped]:
        await self._readers.call(lambda conn: _download_job(conn, name, "swap"))
        if dest is not None:
            await asyncio.to_thread(_check_swap_dest, dest)
        swapped = await self._writer.call(lambda conn: batches.swap(conn, name, dest))
        self._downloader.wake()
        return await self.status(name), swapped

    async def verify(self, name: str, batch: int | None) -> verify.Verification:
        dest = await self._readers.call(lambda conn: _download_job(conn, name, "verify").dest)
        mounted = await asyncio.to_thread(identify, Path(dest))
        wanted = await self._readers.call(
            lambda conn: verify.read_wanted(conn, name, batch, mounted)
        )
        workers = self._downloader.governor.workers()
        return await asyncio.to_thread(verify.check, wanted, mounted, workers)

    def _stop_job(self, job_id: int, cancelled: bool) -> None:
        self._downloader.stop_job(job_id)
        self._scenes.stop_job(job_id, cancelled)

    async def _move(
        self,
        name: str,
        new: JobState,
        verb: str,
        only_from: JobState | None = None,
        message: str | None = None,
    ) -> jobs.JobRow:
        def move(conn: apsw.Connection) -> jobs.JobRow:
            job = jobs.get_job(conn, name)
            jobs.require_move(job, new, verb, only_from)
            return jobs.move_job(conn, job, new, message=message)

        return await self._writer.call(move)


def _download_job(conn: apsw.Connection, name: str, verb: str) -> jobs.JobRow:
    """The job, when it is one of files on disks (the verbs of disk batches need one)."""
    job = jobs.get_job(conn, name)
    if job.kind != "download":
        raise FailedPrecondition(
            f"cannot {verb} job {name!r}: it is a {job.kind} job, which has no disk batches"
        )
    return job


def _first_chunk(request: ScenesRequest) -> tuple[int, ItemChunk | None]:
    """Check the input and read its first chunk: what is wrong there refuses the job."""
    source = Input(request.input, request.columns)
    if not source.rows_total:
        raise InvalidArgument(f"--input {request.input}: there are no rows to process")
    first = next(source.chunks(), None)
    if first is None:
        return source.rows_total, None
    if first.rejected:
        raise InvalidArgument(f"--input {first.rejected[0].describe()}; every row needs a key")
    seen: dict[str, int] = {}
    for key, row in zip(first.keys, first.rows, strict=True):
        if key in seen:
            raise InvalidArgument(
                f"--input {first.source}: rows {seen[key]} and {row} have the same key {key!r}; "
                "keys must be unique"
            )
        seen[key] = row
    return source.rows_total, first


def _scene_failures(conn: apsw.Connection, job_id: int, step: str, limit: int) -> FailureReport:
    """Failed items by step and class; input rows skipped at registration are one more group."""
    groups = files.failure_groups(conn, job_id, step, table="scenes")
    progress = records.registration(conn, job_id)
    if progress is not None and progress.rejected and step in ("", "register"):
        groups.append(
            files.FailureGroupRow(
                "register", "rejected_row", progress.rejected, progress.first_rejected
            )
        )
    listed = [
        files.FailureRow(*row, retrying=False)
        for row in (records.failures(conn, job_id, step, limit) if limit else [])
    ]
    return FailureReport(groups, listed, sum(group.count for group in groups))


def _bucket_ms(job: jobs.JobRow) -> int:
    """Throughput buckets: a few dozen over the job's life, at least a second each."""
    span = max(1, (now_ms() if job.state not in TERMINAL else job.updated_at) - job.created_at)
    for bucket in (1_000, 5_000, 10_000, 60_000, 300_000, 3_600_000):
        if span / bucket <= 60:
            return bucket
    return 86_400_000


def _create_download_job(
    conn: apsw.Connection, request: DownloadRequest, spec: dict, table: str, space: int | None
) -> tuple[jobs.JobRow, bool]:
    """The job from its staged rows, cut into batches when asked, minus what is in place."""
    job, created = jobs.create_staged_job(conn, request.name, spec, str(request.dest), table)
    if created and request.batching is not None and space is not None:
        planned = batches.plan_staged(conn, table, space, request.batching)
        batches.apply_plan(conn, job.id, planned)
        logger.info(
            "job {}: {} batch(es) of at most {:,} bytes, {} oversize file(s) ({})",
            job.name,
            len(planned.batches),
            planned.capacity,
            planned.oversize_files,
            planned.oversize_policy,
        )
    if created:
        skip_unchanged(conn, job.id, str(request.dest), table)
    return job, created


def _space_of(request: DownloadRequest) -> int | None:
    """The bytes per disk of a batched download; `auto` measures dest now."""
    if request.batching is None:
        return None
    return Space.resolve(request.batching.space, str(request.dest)).bytes


def _with_sizes_on_disk(pages, dest: Path):
    """Each page with what is already on disk for it (stat in the listing's thread)."""
    for page in pages:
        yield page, sizes_on_disk(dest, page)


def _check_swap_dest(dest: Path) -> None:
    """A swap's new dest must already be there: it is the new disk's mount point."""
    _check_dest(dest, create=False)


def _prepare_dest(dest: Path) -> None:
    _check_dest(dest, create=True)


def _check_dest(dest: Path, create: bool) -> None:
    if not dest.is_absolute():
        raise InvalidArgument(f"dest {str(dest)!r} must be an absolute path")
    if create:
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument(f"cannot create dest {dest}: {exc.strerror}") from None
    if not dest.is_dir():
        hint = "" if create else " (is the new disk mounted?)"
        raise InvalidArgument(f"dest {dest} is not a directory{hint}")
    if not os.access(dest, os.W_OK | os.X_OK):
        raise InvalidArgument(f"bfd may not write into dest {dest} (check its owner and mode)")
