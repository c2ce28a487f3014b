"""The gRPC servicer: validates requests, calls one control verb, translates the answer.

This is the one place where refusals become gRPC status codes.
"""

import asyncio
import dataclasses
import functools
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Literal

import grpc
import psutil
from loguru import logger
from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from bulkforge.daemon import errors, jobs
from bulkforge.daemon.control import Control
from bulkforge.daemon.disks import Disk
from bulkforge.daemon.downloader.analyze import analyze
from bulkforge.daemon.downloader.listing import Batching, DownloadRequest, Source, source_pages
from bulkforge.daemon.jobs import NAME_PATTERN, JobView
from bulkforge.daemon.machines.job import TERMINAL, JobState
from bulkforge.daemon.planner import Oversize, Plan, Space, check_space, plan_source
from bulkforge.daemon.scenes.items import Columns
from bulkforge.daemon.scenes.request import (
    DEFAULT_FORMAT,
    DEFAULT_MAX_SIZE,
    DEFAULT_SHARD_SIZE,
    DEFAULT_TIMEOUT_S,
    ScenesRequest,
)
from bulkforge.daemon.settings import Settings, Size
from bulkforge.daemon.store import SYNCHRONOUS, Store, StoreFatal
from bulkforge.daemon.validation import describe
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

STATUS_OF = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    # Not UNAVAILABLE: that says bfd itself is unreachable or stopping.
    errors.SourceUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
}
WATCH_ENDS = TERMINAL | {JobState.AWAITING_SWAP}
DEFAULT_FAILURES_LIMIT = 100
# One answer must fit a gRPC message; the groups summarise the rest.
MAX_FAILURES_LIMIT = 10_000
DEFAULT_LARGEST = 10
SIZE = TypeAdapter(Size)

JobName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


Glob = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class SourceSpec(BaseModel):
    """Exactly one source of files, validated at the boundary."""

    manifest: str | None = None
    urls: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    s3: Annotated[str, StringConstraints(max_length=4096)] | None = None
    hf: Annotated[str, StringConstraints(max_length=512)] | None = None
    include: list[Glob] = Field(default_factory=list, max_length=1000)
    exclude: list[Glob] = Field(default_factory=list, max_length=1000)

    @classmethod
    def of(cls, spec: pb.DownloadSpec) -> "SourceSpec":
        return cls(
            manifest=spec.manifest or None,
            urls=list(spec.urls.urls),
            s3=spec.s3 or None,
            hf=spec.hf or None,
            include=list(spec.include),
            exclude=list(spec.exclude),
        )

    @model_validator(mode="after")
    def _one_source(self) -> "SourceSpec":
        given = [bool(self.manifest), bool(self.urls), bool(self.s3), bool(self.hf)]
        if sum(given) != 1:
            raise ValueError(
                "give exactly one source: a manifest, URLs, an S3 listing or an HF repo"
            )
        if self.manifest and not os.path.isabs(self.manifest):
            raise ValueError(f"{self.manifest!r} must be an absolute path")
        return self

    def source(self) -> Source:
        return Source(
            manifest=Path(self.manifest) if self.manifest else None,
            urls=tuple(self.urls),
            s3=self.s3,
            hf=self.hf,
            include=tuple(self.include),
            exclude=tuple(self.exclude),
        )


class PlanArgs(BaseModel):
    """How to cut a source into batches: the space of one disk, the margin, oversize files."""

    space: int | Literal["auto"]
    safety_margin: float = 0.9
    oversize: Oversize = Oversize.FAIL

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, value: str) -> int | str:
        if value == "auto":
            return value
        try:
            return int(SIZE.validate_python(value))
        except ValidationError:
            message = f"{value!r} is not a size (use e.g. 10TB, 931GiB or auto)"
            raise ValueError(message) from None

    @field_validator("safety_margin")
    @classmethod
    def _margin(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1], not {value:g}")
        return value

    @classmethod
    def parse(cls, space: str, margin: float | None, oversize: str) -> "PlanArgs":
        if not space:
            raise errors.InvalidArgument("give --space BYTES (e.g. 10TB) or --space auto")
        given: dict = {"space": space.strip(), "oversize": oversize or "fail"}
        if margin is not None:
            given["safety_margin"] = margin
        return cls.model_validate(given)

    @classmethod
    def of(cls, request: pb.PlanRequest | pb.DownloadSpec | pb.AnalyzeRequest) -> "PlanArgs":
        """From any request carrying space, an optional safety_margin and maybe oversize."""
        margin = request.safety_margin if request.HasField("safety_margin") else None
        return cls.parse(request.space, margin, getattr(request, "oversize", ""))


class SubmitDownload(BaseModel):
    name: JobName
    dest: Annotated[str, StringConstraints(min_length=1)]
    source: SourceSpec
    batching: PlanArgs | None = None
    auto_proceed: bool = False

    @classmethod
    def of(cls, name: str, spec: pb.DownloadSpec) -> "SubmitDownload":
        batching = None
        if spec.space:
            batching = PlanArgs.of(spec)
        elif spec.HasField("safety_margin") or spec.oversize:
            raise errors.InvalidArgument("--safety-margin and --oversize need --space")
        return cls(
            name=name,
            dest=spec.dest,
            source=SourceSpec.of(spec),
            batching=batching,
            auto_proceed=spec.auto_proceed,
        )

    @model_validator(mode="after")
    def _consistent(self) -> "SubmitDownload":
        if not os.path.isabs(self.dest):
            raise ValueError(f"{self.dest!r} must be an absolute path")
        if self.auto_proceed and self.batching is None:
            raise ValueError("--auto-proceed needs --space: without it there is one batch")
        return self

    def request(self) -> DownloadRequest:
        batching = None
        if self.batching is not None:
            batching = Batching(
                space=self.batching.space,
                margin=self.batching.safety_margin,
                oversize=str(self.batching.oversize),
                auto_proceed=self.auto_proceed,
            )
        return DownloadRequest(
            name=self.name, dest=Path(self.dest), source=self.source.source(), batching=batching
        )


ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
StepName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class SubmitScenes(BaseModel):
    """A scenes job as the request gives it, checked before anything is read."""

    name: JobName
    input: Annotated[str, StringConstraints(min_length=1)]
    key: ColumnName
    url: ColumnName
    keep: list[ColumnName] = Field(default_factory=list, max_length=256)
    dest: Annotated[str, StringConstraints(min_length=1)]
    shard_size: int = Field(default=DEFAULT_SHARD_SIZE, ge=1, le=1_000_000)
    format: Literal["files", "webdataset", "parquet"] = DEFAULT_FORMAT
    steps: list[StepName] = Field(default_factory=lambda: ["fetch"], max_length=32)
    max_size: int = Field(default=DEFAULT_MAX_SIZE, ge=1, le=2 * 1024**3)
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=3600)

    @classmethod
    def of(cls, name: str, spec: pb.ScenesSpec) -> "SubmitScenes":
        given: dict = {
            "name": name,
            "input": spec.input,
            "key": spec.key,
            "url": spec.url,
            "keep": list(spec.keep),
            "dest": spec.dest,
        }
        if spec.shard_size:
            given["shard_size"] = spec.shard_size
        if spec.format:
            given["format"] = spec.format
        if spec.steps:
            given["steps"] = list(spec.steps)
        if spec.max_size:
            given["max_size"] = _size(spec.max_size, "--max-size")
        if spec.timeout_s:
            given["timeout_s"] = spec.timeout_s
        return cls.model_validate(given)

    @model_validator(mode="after")
    def _consistent(self) -> "SubmitScenes":
        for what, path in (("--input", self.input), ("--dest", self.dest)):
            if not os.path.isabs(path):
                raise ValueError(f"{what} {path!r} must be an absolute path")
        if len(set(self.keep)) != len(self.keep):
            raise ValueError("--keep names a column twice")
        return self

    def request(self) -> ScenesRequest:
        return ScenesRequest(
            name=self.name,
            input=Path(self.input),
            columns=Columns(self.key, self.url, tuple(self.keep)),
            dest=Path(self.dest),
            shard_size=self.shard_size,
            format=self.format,
            steps=tuple(self.steps),
            max_size=self.max_size,
            timeout_s=self.timeout_s,
        )


def _size(value: str, flag: str) -> int:
    try:
        return int(SIZE.validate_python(value.strip()))
    except ValidationError:
        raise errors.InvalidArgument(f"{flag} {value!r} is not a size (e.g. 64MiB)") from None


class NameOnly(BaseModel):
    name: JobName


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, errors.Refused):
        await context.abort(STATUS_OF[type(exc)], str(exc))
    if isinstance(exc, ValidationError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, describe(exc))
    if isinstance(exc, StoreFatal):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"bfd is stopping: {exc}")
    logger.opt(exception=exc).error("internal error answering a request")
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({exc}); see the bfd log")


def refusals(method: Callable) -> Callable:
    """Turn refusals and validation errors of a unary method into status codes."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise  # context.abort() was called already; let it through untouched
        except Exception as exc:
            await _abort(context, exc)

    return wrapper


def plan_message(plan: Plan, space: Space, seconds: float) -> pb.PlanResponse:
    batches, files, size = [], 0, 0
    for batch in plan.batches:
        files, size = files + batch.files, size + batch.bytes
        batches.append(
            pb.PlannedBatch(
                index=batch.index,
                files=batch.files,
                bytes=batch.bytes,
                cumulative_files=files,
                cumulative_bytes=size,
                directories=batch.directories,
                split_directories=batch.split_directories,
                oversize=batch.oversize,
            )
        )
    return pb.PlanResponse(
        space=plan.space,
        safety_margin=plan.margin,
        batch_limit=plan.capacity,
        space_from=space.source,
        files=plan.files,
        bytes=plan.bytes,
        batches=batches,
        peak_bytes=plan.peak_bytes,
        oversize_files=plan.oversize_files,
        oversize_bytes=plan.oversize_bytes,
        oversize=[pb.SizeGroup(key=path, files=1, bytes=n) for n, path in plan.oversize_listed],
        oversize_policy=str(plan.oversize_policy),
        seconds=seconds,
    )


def batch_message(view: jobs.BatchView) -> pb.Batch:
    batch = pb.Batch(index=view.index, state=view.state, bytes=view.bytes, files=view.files)
    disk = Disk.from_json(view.disk)
    if disk is not None:
        batch.disk = disk.describe()
        batch.disk_info.CopyFrom(disk_message(disk))
    batch.failures = view.failures
    batch.started_at_ms = view.started_at or 0
    if view.state in ("complete", "archived"):
        batch.finished_at_ms = view.updated_at
    return batch


def disk_message(disk: Disk) -> pb.DiskInfo:
    return pb.DiskInfo(**dataclasses.asdict(disk))


def job_message(view: JobView) -> pb.Job:
    job = view.job
    return pb.Job(
        name=job.name,
        kind=job.kind,
        state=str(job.state),
        counts=view.counts,
        bytes_done=view.bytes_done,
        bytes_total=view.bytes_total,
        batches=[batch_message(b) for b in view.batches],
        dest=job.dest,
        message=job.message,
        items_total=view.items_total,
        retrying=view.retrying,
        created_at_ms=job.created_at,
        updated_at_ms=job.updated_at,
        registration=_registration(view),
    )


def _registration(view: JobView) -> pb.Registration | None:
    progress = view.registration
    if progress is None:
        return None
    return pb.Registration(
        rows_read=progress.rows_read,
        rows_total=progress.rows_total,
        done=progress.done,
        rejected=progress.rejected,
        first_rejected=progress.first_rejected,
    )


def _group(row) -> pb.FailureGroup:
    return pb.FailureGroup(
        step=row.step, error_class=row.error_class, count=row.count, sample=row.sample
    )


class Rates:
    """Bytes and items per second over the last few snapshots of a watch."""

    def __init__(self, window: int = 10):
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=window)

    def add(self, view: JobView) -> tuple[float, float, float]:
        finished = sum(view.counts.get(s, 0) for s in ("done", "skipped", "failed"))
        self._samples.append((time.monotonic(), view.bytes_done, finished))
        (t0, b0, i0), (t1, b1, i1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0, -1.0
        bytes_rate, items_rate = (b1 - b0) / span, (i1 - i0) / span
        eta = -1.0
        if view.bytes_total and bytes_rate > 0:
            eta = (view.bytes_total - view.bytes_done) / bytes_rate
        elif items_rate > 0:
            eta = (view.items_total - finished) / items_rate
        return bytes_rate, items_rate, eta


class Servicer(pb_grpc.BulkforgeServicer):
    def __init__(self, control: Control, store: Store, settings: Settings, downloader):
        self._control = control
        self._store = store
        self._settings = settings
        self._downloader = downloader
        self._started = time.monotonic()

    @refusals
    async def Submit(self, request: pb.SubmitRequest, context) -> pb.SubmitResponse:
        kind = request.WhichOneof("spec")
        if kind == "download":
            checked = SubmitDownload.of(request.name, request.download)
            view, created = await self._control.submit_download(checked.request())
        elif kind == "scenes":
            scenes = SubmitScenes.of(request.name, request.scenes)
            view, created = await self._control.submit_scenes(scenes.request())
        else:
            raise errors.InvalidArgument("the request names no job spec (download or scenes)")
        if created:
            logger.info("job {} submitted: {:,} items", view.job.name, view.items_total)
        return pb.SubmitResponse(job=job_message(view), created=created)

    @refusals
    async def Export(self, request: pb.ExportRequest, context) -> pb.ExportResponse:
        name = NameOnly(name=request.name).name
        if not request.dest or not os.path.isabs(request.dest):
            raise errors.InvalidArgument(f"--dest {request.dest!r} must be an absolute path")
        started = time.perf_counter()
        exported = await self._control.export(name, Path(request.dest))
        return pb.ExportResponse(
            paths=[str(path) for path in exported.paths],
            total=exported.total,
            successful=exported.successful,
            failed=exported.failed,
            seconds=time.perf_counter() - started,
        )

    @refusals
    async def List(self, request: pb.ListRequest, context) -> pb.ListResponse:
        return pb.ListResponse(jobs=[job_message(v) for v in await self._control.list()])

    @refusals
    async def Status(self, request: pb.JobRef, context) -> pb.Job:
        return job_message(await self._control.status(NameOnly(name=request.name).name))

    @refusals
    async def Pause(self, request: pb.JobRef, context) -> pb.Job:
        return job_message(await self._control.pause(NameOnly(name=request.name).name))

    @refusals
    async def Resume(self, request: pb.JobRef, context) -> pb.Job:
        return job_message(await self._control.resume(NameOnly(name=request.name).name))

    @refusals
    async def Cancel(self, request: pb.JobRef, context) -> pb.Job:
        return job_message(await self._control.cancel(NameOnly(name=request.name).name))

    @refusals
    async def Retry(self, request: pb.RetryRequest, context) -> pb.RetryResponse:
        name = NameOnly(name=request.name).name
        view, retried = await self._control.retry(name, request.step, request.error)
        return pb.RetryResponse(job=job_message(view), retried=retried)

    @refusals
    async def Failures(self, request: pb.FailuresRequest, context) -> pb.FailuresResponse:
        if not 0 <= request.limit <= MAX_FAILURES_LIMIT:
            raise errors.InvalidArgument(f"limit must be between 0 and {MAX_FAILURES_LIMIT}")
        report = await self._control.failures(
            NameOnly(name=request.name).name,
            request.step,
            request.limit or DEFAULT_FAILURES_LIMIT,
        )
        return pb.FailuresResponse(
            groups=[_group(g) for g in report.groups],
            failures=[
                pb.Failure(
                    item=f.item,
                    url=f.url,
                    step=f.step,
                    error_class=f.error_class,
                    error=f.error,
                    attempts=f.attempts,
                    retrying=f.retrying,
                )
                for f in report.failures
            ],
            total=report.total,
        )

    @refusals
    async def Stats(self, request: pb.JobRef, context) -> pb.StatsResponse:
        stats = await self._control.stats(NameOnly(name=request.name).name)
        return pb.StatsResponse(
            job=job_message(stats.view),
            throughput=[
                pb.ThroughputBucket(start_ms=start, items=items, bytes=size)
                for start, items, size in stats.throughput
            ],
            failures=[_group(g) for g in stats.failures],
            elapsed_s=stats.elapsed_s,
            items_per_s=stats.items_per_s,
            bytes_per_s=stats.bytes_per_s,
            bucket_s=stats.bucket_s,
        )

    @refusals
    async def Analyze(self, request: pb.AnalyzeRequest, context) -> pb.AnalyzeResponse:
        if request.largest < 0:
            raise errors.InvalidArgument("largest must not be negative")
        source = SourceSpec.of(request.source).source()
        limit = None
        if request.space:
            args = PlanArgs.of(request)
            space = await asyncio.to_thread(Space.resolve, args.space, request.source.dest)
            limit = check_space(space.bytes, args.safety_margin)
        summary = await asyncio.to_thread(
            lambda: analyze(source_pages(source), request.largest or DEFAULT_LARGEST, limit)
        )
        return pb.AnalyzeResponse(
            files=summary.files,
            bytes=summary.bytes,
            unknown_size=summary.unknown_size,
            with_checksum=summary.with_checksum,
            by_extension=_groups(summary.by_extension),
            by_top_dir=_groups(summary.by_top_dir),
            largest=[pb.SizeGroup(key=path, files=1, bytes=size) for size, path in summary.largest],
            batch_limit=limit or 0,
            oversize_files=summary.oversize_files,
            oversize_bytes=summary.oversize_bytes,
            oversize=[pb.SizeGroup(key=p, files=1, bytes=n) for n, p in summary.oversize],
        )

    @refusals
    async def Plan(self, request: pb.PlanRequest, context) -> pb.PlanResponse:
        args = PlanArgs.of(request)
        source = SourceSpec.of(request.source).source()
        started = time.perf_counter()
        space = await asyncio.to_thread(Space.resolve, args.space, request.source.dest)
        plan = await asyncio.to_thread(
            plan_source, source, space, args.safety_margin, args.oversize
        )
        return plan_message(plan, space, time.perf_counter() - started)

    @refusals
    async def Continue(self, request: pb.JobRef, context) -> pb.Job:
        return job_message(await self._control.continue_job(NameOnly(name=request.name).name))

    @refusals
    async def Swap(self, request: pb.SwapRequest, context) -> pb.SwapResponse:
        name = NameOnly(name=request.name).name
        dest = Path(request.dest) if request.dest else None
        view, swapped = await self._control.swap(name, dest)
        return pb.SwapResponse(
            job=job_message(view),
            archived=swapped.archived,
            disk=disk_message(swapped.disk),
            new_disk=swapped.new_disk,
            note=swapped.note,
        )

    @refusals
    async def Verify(self, request: pb.VerifyRequest, context) -> pb.VerifyResponse:
        name = NameOnly(name=request.name).name
        batch = request.batch if request.HasField("batch") else None
        if batch is not None and batch < 0:
            raise errors.InvalidArgument("--batch must not be negative")
        started = time.perf_counter()
        checked = await self._control.verify(name, batch)
        return pb.VerifyResponse(
            dest=checked.dest,
            mounted=disk_message(checked.mounted),
            batches=[
                pb.BatchCheck(
                    index=b.index,
                    went_to=b.went_to.describe() if b.went_to else "",
                    on_this_disk=b.went_to is not None and b.went_to.key == checked.mounted.key,
                    checked=b.checked,
                    missing_count=b.missing_count,
                    missing=b.missing,
                    changed_count=b.changed_count,
                    changed=[pb.FileProblem(path=p, problem=why) for p, why in b.changed],
                )
                for b in checked.batches
            ],
            extra_count=checked.extra_count,
            extra=checked.extra,
            ok=checked.ok,
            seconds=time.perf_counter() - started,
        )

    @refusals
    async def System(self, request: pb.SystemRequest, context) -> pb.SystemResponse:
        if request.set:
            self._downloader.governor.change(dict(request.set))
            logger.info("governor limits changed: {}", dict(request.set))
            self._downloader.wake()
        return await asyncio.to_thread(self._system)

    def _system(self) -> pb.SystemResponse:
        settings = self._settings
        governor = self._downloader.governor
        db_bytes, wal_bytes = self._store.file_sizes()
        dests = sorted({job.dest for job in self._store.readers.read(jobs.all_jobs)})
        return pb.SystemResponse(
            version=version(),
            pid=os.getpid(),
            uptime_s=time.monotonic() - self._started,
            state_dir=str(settings.state_dir),
            socket=str(settings.socket),
            rss_bytes=governor.rss(),
            memory_cap=governor.memory_cap,
            cpu_workers=governor.cpu_workers,
            disk_threshold=governor.disk.threshold,
            bandwidth=governor.bandwidth.rate,
            active_transfers=self._downloader.active_transfers,
            holds=[pb.Hold(job=job, reason=why) for job, why in self._downloader.holds().items()],
            max_connections=settings.max_connections,
            db_bytes=db_bytes,
            wal_bytes=wal_bytes,
            durability=f"synchronous={SYNCHRONOUS}, WAL, group commit",
            disks=[_disk(path) for path in dests if os.path.isdir(path)],
            commits=self._store.writer.commits,
            commit_p99_ms=self._store.writer.commit_p99_ms(),
        )

    async def Watch(self, request: pb.WatchRequest, context) -> AsyncIterator[pb.WatchEvent]:
        try:
            name = NameOnly(name=request.name).name
            if request.interval_s < 0:
                raise errors.InvalidArgument("interval_s must not be negative")
            interval = max(0.1, request.interval_s or 1.0)
            rates = Rates()
            while True:
                # One short read per event: no transaction stays open between messages.
                view = await self._control.status(name)
                bytes_rate, items_rate, eta = rates.add(view)
                final = view.job.state in WATCH_ENDS
                yield pb.WatchEvent(
                    job=job_message(view),
                    bytes_per_s=bytes_rate,
                    items_per_s=items_rate,
                    eta_s=eta,
                    final=final,
                )
                if final:
                    return
                await asyncio.sleep(interval)
        except (errors.Refused, ValidationError, StoreFatal) as exc:
            await _abort(context, exc)


def _groups(groups: dict) -> list[pb.SizeGroup]:
    """Biggest first, by bytes then files."""
    ordered = sorted(groups.items(), key=lambda item: (-item[1].bytes, -item[1].files, item[0]))
    return [pb.SizeGroup(key=key, files=g.files, bytes=g.bytes) for key, g in ordered]


def _disk(path: str) -> pb.Disk:
    usage = psutil.disk_usage(path)
    return pb.Disk(path=path, total_bytes=usage.total, free_bytes=usage.free)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("bulkforge")
    except PackageNotFoundError:
        return "0+unknown"
