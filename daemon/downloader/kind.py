"""The download kind behind the seam: files from a source onto disks, batch by batch."""

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.disks import Places, dest_for, identify
from bulkforge.daemon.downloader import batches, files, register, verify
from bulkforge.daemon.downloader import machine as file_machine
from bulkforge.daemon.downloader.analyze import Analysis, analyze
from bulkforge.daemon.downloader.incremental import sizes_on_disk, skip_unchanged
from bulkforge.daemon.downloader.listing import DownloadRequest, source_pages
from bulkforge.daemon.downloader.machine import FileState
from bulkforge.daemon.downloader.paths import partial_path
from bulkforge.daemon.downloader.planner import Plan, Space, check_space, plan_source
from bulkforge.daemon.downloader.request import PlanArgs, SourceSpec, SubmitDownload
from bulkforge.daemon.downloader.scheduler import Downloader
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.failures import FailureReport
from bulkforge.daemon.machines import batch as batch_machine
from bulkforge.daemon.machines.batch import BatchState
from bulkforge.daemon.pipeline import DiskBatches, JobKind, Services, VerifiedFile, VerifiedFiles
from bulkforge.daemon.store import StoreFatal, guarded_update, now_ms
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import MAX_LARGEST, size_text

DEFAULT_LARGEST = 10
THROUGHPUT_BUCKET_MS = 60_000


class DownloadKind(JobKind, DiskBatches, VerifiedFiles):
    name = register.KIND
    batch_unit = "disk"
    item_unit = "files"
    failure_steps = ("plan", "connect", "transfer", "verify", "rename", "internal")
    item_machine = file_machine.MACHINE

    def __init__(self, services: Services):
        super().__init__(services)
        self._downloader = Downloader(services)

    @property
    def runner(self) -> Downloader:
        return self._downloader

    def parse(self, name: str, spec: pb.DownloadSpec) -> DownloadRequest:
        return SubmitDownload.of(name, spec).request()

    # -- submit ----------------------------------------------------------------------------

    async def create(self, request: DownloadRequest, spec: dict) -> tuple[jobs.JobRow, bool]:
        """List the source into a staging table page by page, then create the job from it."""
        space = await asyncio.to_thread(_space_of, request)
        table = f"staged_{uuid.uuid4().hex}"
        await self.writer.call(lambda c: register.stage_open(c, table))
        try:
            pages = _with_sizes_on_disk(source_pages(request.source), request.dest)
            while (staged := await asyncio.to_thread(next, pages, None)) is not None:
                await self.writer.call(
                    lambda c, staged=staged: register.stage_rows(c, table, *staged)
                )
            job, created = await self.writer.call(
                lambda c: _create_job(c, request, spec, table, space)
            )
        finally:
            with contextlib.suppress(StoreFatal):
                await self.writer.call(lambda c: register.stage_drop(c, table))
        return job, created

    def output_of(self, conn: apsw.Connection, job: jobs.JobRow) -> Iterator[str]:
        """Files it installed (done) and the partials of those it did not finish, in its
        batches still on this disk, and its batches' manifests. Files it skipped because
        they were in place already are not its own; neither are archived batches' files,
        on disks swapped out, nor a file another job over the same dest holds as its own
        (done, or skipped as in place: a download re-run over this one's files)."""
        rows = conn.execute(
            "SELECT files.path, files.state FROM files LEFT JOIN batches "
            "ON batches.job_id = files.job_id AND batches.idx = files.batch_idx "
            "WHERE files.job_id = ?1 AND coalesce(batches.state, '') != ?2 AND files.state != ?3 "
            "AND NOT EXISTS (SELECT 1 FROM jobs AS other JOIN files AS theirs "
            "ON theirs.job_id = other.id AND theirs.path = files.path "
            "WHERE other.dest = ?4 AND other.id != ?1 AND theirs.state IN (?3, ?5)) "
            "ORDER BY files.id",
            (
                job.id,
                str(BatchState.ARCHIVED),
                str(FileState.SKIPPED),
                job.dest,
                str(FileState.DONE),
            ),
        )
        for path, state in rows:
            if state == FileState.DONE:
                yield path
            yield str(partial_path(Path(path)))
        dest = Path(job.dest)
        for (index,) in conn.execute("SELECT idx FROM batches WHERE job_id = ?", (job.id,)):
            manifest = batches.manifest_path(dest, job.name, index).relative_to(dest)
            yield from (str(manifest), f"{manifest}.tmp")

    # -- reads -----------------------------------------------------------------------------

    def fill_view(self, conn: apsw.Connection, view: jobs.JobView) -> None:
        for state, (count, size) in files.FILES.counts(conn, view.job.id).items():
            view.counts[state] = count
            view.items_total += count
            view.bytes_total += size
            if state in (FileState.DONE, FileState.SKIPPED):
                view.bytes_done += size
        view.bytes_total_known = not files.any_unknown_size(conn, view.job.id)
        if view.counts.get(FileState.FAILED):  # else none retries, no batch has failures
            _fill_failures(conn, view)

    def failures(
        self, conn: apsw.Connection, job: jobs.JobRow, step: str, limit: int
    ) -> FailureReport:
        return files.FILES.report(conn, job.id, step, limit)

    def throughput(self, conn: apsw.Connection, job: jobs.JobRow) -> tuple[list[tuple], int]:
        return files.FILES.throughput(conn, job.id, THROUGHPUT_BUCKET_MS), THROUGHPUT_BUCKET_MS

    # -- writes ----------------------------------------------------------------------------

    def retry(self, conn: apsw.Connection, job: jobs.JobRow, step: str, error: str) -> int:
        retried = files.retry_failed(conn, job.id, step, error)
        batches.reopen_retried(conn, job.id)
        return retried

    def repair(self, conn: apsw.Connection) -> None:
        files.repair_in_flight(conn)
        for batch_id, index, name in conn.execute(
            "SELECT batches.id, idx, name FROM batches JOIN jobs ON jobs.id = batches.job_id "
            "WHERE batches.state = 'verifying' AND jobs.kind = ?",
            (self.name,),
        ).fetchall():
            guarded_update(
                conn,
                "batches",
                batch_id,
                BatchState.VERIFYING,
                BatchState.ACTIVE,
                batch_machine.check_transition,
                updated_at=now_ms(),
            )
            logger.info("repair: job {} batch {} was verifying at shutdown -> active", name, index)

    # -- disk batches ----------------------------------------------------------------------

    def verified_files(
        self, conn: apsw.Connection, job: jobs.JobRow, after: int
    ) -> tuple[list[VerifiedFile], int]:
        return files.verified(conn, job, after)

    async def continue_job(self, job: jobs.JobRow) -> None:
        await self.writer.call(lambda conn: batches.continue_job(conn, job.name))
        self._downloader.wake()

    async def swap(self, job: jobs.JobRow, dest: Path | None) -> batches.Swapped:
        # The new disk is empty: its dest is made as submit makes one (and goes again,
        # if still empty, when the swap is refused).
        target = dest if dest is not None else Path(job.dest)
        async with dest_for(target, Places.of(self.services.settings)):
            swapped = await self.writer.call(lambda conn: batches.swap(conn, job.name, dest))
        self._downloader.wake()
        return swapped

    async def verify(self, job: jobs.JobRow, batch: int | None) -> verify.Verification:
        mounted = await asyncio.to_thread(identify, Path(job.dest))
        wanted = await self.readers.call(
            lambda conn: verify.read_wanted(conn, job.name, batch, mounted)
        )
        workers = self.services.governor.workers()
        return await asyncio.to_thread(verify.check, wanted, mounted, workers)

    async def plan(self, request: pb.PlanRequest) -> tuple[Plan, Space, float]:
        args = PlanArgs.of(request)
        source = SourceSpec.of(request.source).source()
        started = time.perf_counter()
        space = await asyncio.to_thread(Space.resolve, args.space, request.source.dest)
        plan = await asyncio.to_thread(
            plan_source, source, space, args.safety_margin, args.oversize
        )
        return plan, space, time.perf_counter() - started

    async def analyze(self, request: pb.AnalyzeRequest) -> tuple[Analysis, int | None]:
        if not 0 <= request.largest <= MAX_LARGEST:
            raise InvalidArgument(f"largest must be from 0 to {MAX_LARGEST}")
        source = SourceSpec.of(request.source).source()
        limit = None
        if request.space:
            args = PlanArgs.of(request)
            space = await asyncio.to_thread(Space.resolve, args.space, request.source.dest)
            limit = check_space(space.bytes, args.safety_margin)
        summary = await asyncio.to_thread(
            lambda: analyze(source_pages(source), request.largest or DEFAULT_LARGEST, limit)
        )
        return summary, limit


def _fill_failures(conn: apsw.Connection, view: jobs.JobView) -> None:
    view.retrying = files.retrying_count(conn, view.job.id)
    failed = files.failed_by_batch(conn, view.job.id) if view.batches else {}
    for batch in view.batches:
        batch.failures = failed.get(batch.index, 0)


def _create_job(
    conn: apsw.Connection, request: DownloadRequest, spec: dict, table: str, space: int
) -> tuple[jobs.JobRow, bool]:
    """The job from its staged rows, cut into batches when asked, minus what is in place."""
    job, created = register.create_staged_job(conn, request.name, spec, str(request.dest), table)
    if created and request.batching is None:
        register.refuse_larger_than(conn, table, space, f"the filesystem at {request.dest}")
    if created and request.batching is not None:
        planned = batches.plan_staged(conn, table, space, request.batching)
        batches.apply_plan(conn, job.id, planned)
        logger.info(
            "job {}: {} batch(es) of at most {}, {} oversize file(s) ({})",
            job.name,
            len(planned.batches),
            size_text(planned.capacity),
            planned.oversize_files,
            planned.oversize_policy,
        )
    if created:
        skip_unchanged(conn, job.id, str(request.dest), table)
    return job, created


def _space_of(request: DownloadRequest) -> int:
    """The bytes per disk of a batched download (`auto` measures dest now); unbatched, the
    size of the filesystem at dest: no file larger can ever land there."""
    if request.batching is None:
        return shutil.disk_usage(request.dest).total
    return Space.resolve(request.batching.space, str(request.dest)).bytes


def _with_sizes_on_disk(pages, dest: Path):
    """Each page with what is already on disk for it (stat in the listing's thread)."""
    for page in pages:
        yield page, sizes_on_disk(dest, page)
