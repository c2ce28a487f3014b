"""The verbs of the control API, on the store and the job kinds; the servicer only translates.

Every verb exists once here, kind-neutral: what differs by kind is asked of the
job's kind through the seam (`pipeline.py`), and a verb only some kinds offer is
refused, saying why, for a job of another kind.
"""

import asyncio
import dataclasses
import itertools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import apsw
import psutil
from loguru import logger

from bulkforge.daemon import jobs, outputs
from bulkforge.daemon.errors import FailedPrecondition, InvalidArgument
from bulkforge.daemon.failures import FailureGroupRow, FailureReport
from bulkforge.daemon.governor import Governor
from bulkforge.daemon.machines import Tone
from bulkforge.daemon.machines.job import TERMINAL, JobState
from bulkforge.daemon.pipeline import DiskBatches, ItemExport, JobKind, Kinds, Rerun
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.store import SYNCHRONOUS, Store, now_ms
from bulkforge.daemon.transfer.engine import Engine
from bulkforge.proto.text import unknown
from bulkforge.proto.units import size_text

# How long a job's view read for one `status` (or watch event) answers the others: a poller
# cannot tell it from an answer that took that much longer, and twenty pollers of one job
# then cost bfd one store read per interval, not twenty (bench/load_bench.py).
SHARED_VIEW_S = 0.1


@dataclass
class Stats:
    view: jobs.JobView
    # (bucket start ms, items, bytes, items per second of the bucket the job lived in)
    throughput: list[tuple[int, int, int, float]]
    failures: list[FailureGroupRow]
    elapsed_s: float
    items_per_s: float
    bytes_per_s: float
    bucket_s: int = 60
    # What the throughput's items are: the job's items, or rows (a generate job).
    unit: str = "items"


@dataclass(frozen=True)
class DiskUse:
    path: str
    total_bytes: int
    free_bytes: int


@dataclass
class SystemView:
    """What the daemon sees of itself and decides: the answer of `bfctl system`."""

    pid: int
    uptime_s: float
    state_dir: str
    socket: str
    rss_bytes: int
    memory_cap: int
    cpu_workers: int
    disk_threshold: float
    bandwidth: int
    active_transfers: int
    holds: dict[str, str]
    max_connections: int
    per_host_connections: int
    transfer_workers: int
    transfer_worker_pids: list[int]
    db_bytes: int
    wal_bytes: int
    durability: str
    commits: int
    commit_p99_ms: float
    disks: list[DiskUse] = field(default_factory=list)
    # Where Prometheus scrapes bfd (HOST:PORT), or "" when metrics are off.
    metrics_address: str = ""
    # Where the TLS API listens (HOST:PORT), or "" without --listen.
    listen_address: str = ""
    # Whether that listener takes calls no token or client certificate authenticates.
    allow_unauthenticated: bool = False


# How many paths a removal that could not delete them names in bfd's log.
LISTED_FAILURES = 100


class SharedViews:
    """Each job's latest view, shared by every caller while it is at most `max_age_s` old.

    A caller that arrives while a read is in flight shares that read too. The verbs that
    change a job read it afresh (`fresh`), so their answer and every `status` after it show
    the change. A read that fails is not kept. Views shared are never changed by callers.
    """

    def __init__(self, read: Callable[[str], Awaitable[jobs.JobView]], max_age_s: float):
        self._read = read
        self._max_age_s = max_age_s
        # name -> (when its read started, monotonic; the read)
        self._latest: dict[str, tuple[float, asyncio.Future[jobs.JobView]]] = {}

    async def get(self, name: str) -> jobs.JobView:
        latest = self._latest.get(name)
        if latest is None or time.monotonic() - latest[0] > self._max_age_s:
            return await self.fresh(name)
        # Shielded: a caller that gives up (its deadline) does not cancel the others' read.
        return await asyncio.shield(latest[1])

    async def fresh(self, name: str) -> jobs.JobView:
        """A read started now, which every caller after this one shares."""
        started = time.monotonic()
        self._forget_read_before(started - self._max_age_s)
        read = asyncio.ensure_future(self._read(name))
        self._latest[name] = (started, read)
        read.add_done_callback(lambda done: self._forget_failed(name, done))
        return await asyncio.shield(read)

    def forget(self, name: str) -> None:
        self._latest.pop(name, None)

    def _forget_read_before(self, moment: float) -> None:
        for name in [name for name, (started, _) in self._latest.items() if started < moment]:
            del self._latest[name]

    def _forget_failed(self, name: str, read: asyncio.Future) -> None:
        failed = read.cancelled() or read.exception() is not None
        if failed and self._latest.get(name, (0, None))[1] is read:
            del self._latest[name]


class Control:
    def __init__(
        self, store: Store, kinds: Kinds, governor: Governor, settings: Settings, transfers: Engine
    ):
        self._store = store
        self._writer = store.writer
        self._readers = store.readers
        self._kinds = kinds
        self._governor = governor
        self._settings = settings
        self._transfers = transfers
        self._started = time.monotonic()
        self._views = SharedViews(self._read_view, SHARED_VIEW_S)
        # Set by app once they are bound (bfd --metrics, bfd --listen).
        self.metrics_address = ""
        self.listen_address = ""
        # Told each removed job's last view (the metrics keep counting what it finished).
        self.on_remove: Callable[[jobs.JobView], None] | None = None

    # -- reads -----------------------------------------------------------------------------

    def item_tones(self) -> dict[str, Mapping[str, Tone]]:
        """Each kind's item states, each with its tone (metrics count the ended ones)."""
        return {kind.name: kind.item_tones for kind in self._kinds}

    async def status(self, name: str) -> jobs.JobView:
        """The job's view, read at most SHARED_VIEW_S ago (and never older than a change
        made through a verb here)."""
        return await self._views.get(name)

    async def _read_view(self, name: str) -> jobs.JobView:
        read_at = time.time()
        view = await self._readers.call(lambda c: self._view(c, jobs.get_job(c, name)))
        view.read_at = read_at
        return self._with_in_flight(view)

    async def list(self, states: list[str], kind: str) -> list[jobs.JobView]:
        """Every job, or those in one of `states` and of `kind` when given."""
        strange = [state for state in states if state not in set(JobState)]
        if strange:
            raise InvalidArgument(unknown("job state", strange[0], list(JobState)))
        kinds = [k.name for k in self._kinds]
        if kind and kind not in kinds:
            raise InvalidArgument(unknown("job kind", kind, kinds))

        def wanted(job: jobs.JobRow) -> bool:
            return (not states or job.state in states) and (not kind or job.kind == kind)

        views = await self._readers.call(
            lambda c: [self._view(c, job) for job in jobs.all_jobs(c) if wanted(job)]
        )
        return [self._with_in_flight(view) for view in views]

    def _view(self, conn: apsw.Connection, job: jobs.JobRow) -> jobs.JobView:
        """The job's view; a job of a kind this bfd does not run still shows its row."""
        view = jobs.job_view(conn, job)
        kind = self._kinds.find(job)
        if kind is not None:
            view.batch_unit = kind.batch_unit
            view.item_unit = kind.item_unit
            view.item_tones = dict(kind.item_tones)
            kind.fill_view(conn, view)
        return view

    def _with_in_flight(self, view: jobs.JobView) -> jobs.JobView:
        """Count the bytes of work under way, so progress moves between items."""
        kind = self._kinds.find(view.job)
        if kind is None:
            return view
        view.bytes_done += kind.runner.in_flight_bytes(view.job.id)
        # A total that leaves out files of unknown size is no bound of what has come.
        if view.bytes_total and view.bytes_total_known:
            view.bytes_done = min(view.bytes_done, view.bytes_total)
        return view

    async def failures(self, name: str, step: str, limit: int) -> FailureReport:
        def read(conn: apsw.Connection) -> FailureReport:
            job = jobs.get_job(conn, name)
            kind = self._kinds.of(job)
            _check_step(conn, kind, job, step)
            report = kind.failures(conn, job, step, limit)
            report.item_unit = kind.item_unit
            return report

        return await self._readers.call(read)

    async def stats(self, name: str) -> Stats:
        def read(conn: apsw.Connection) -> tuple[JobKind, jobs.JobView, list, list, int]:
            job = jobs.get_job(conn, name)
            kind = self._kinds.of(job)
            throughput, bucket = kind.throughput(conn, job)
            groups = kind.failures(conn, job, "", 0).groups
            return kind, self._view(conn, job), throughput, groups, bucket

        kind, view, throughput, groups, bucket = await self._readers.call(read)
        born = view.job.created_at
        ended = view.job.updated_at if view.job.state in TERMINAL else now_ms()
        elapsed = max(0.001, (ended - born) / 1000)
        items = sum(row[1] for row in throughput)
        size = sum(row[2] for row in throughput)
        rated = [
            (start, count, nbytes, count / _lived_s(start, start + bucket, born, ended))
            for start, count, nbytes in throughput
        ]
        unit = kind.throughput_unit or kind.item_unit
        return Stats(
            view, rated, groups, elapsed, items / elapsed, size / elapsed, bucket // 1000, unit
        )

    async def system(self) -> SystemView:
        """The daemon, its governor and its store now."""
        # What the event loop changes is read on it; the store and the disks in a thread.
        active, holds = self.active_transfers, dict(self._governor.holds)
        worker_pids = tuple(self._transfers.workers.pids())
        return await asyncio.to_thread(self._system, active, holds, worker_pids)

    def _system(
        self, active_transfers: int, holds: dict[str, str], worker_pids: tuple[int, ...]
    ) -> SystemView:
        governor, settings, writer = self._governor, self._settings, self._store.writer
        db_bytes, wal_bytes = self._store.file_sizes()
        dests = sorted({job.dest for job in self._store.readers.read(jobs.all_jobs)})
        return SystemView(
            pid=os.getpid(),
            uptime_s=time.monotonic() - self._started,
            state_dir=str(settings.state_dir),
            socket=str(settings.socket),
            rss_bytes=governor.rss(),
            memory_cap=governor.memory_cap,
            cpu_workers=governor.cpu_workers,
            disk_threshold=governor.disk.threshold,
            bandwidth=governor.bandwidth.rate,
            active_transfers=active_transfers,
            holds=holds,
            max_connections=governor.max_connections,
            per_host_connections=governor.per_host_connections,
            transfer_workers=governor.transfer_workers,
            transfer_worker_pids=list(worker_pids),
            db_bytes=db_bytes,
            wal_bytes=wal_bytes,
            durability=f"synchronous={SYNCHRONOUS}, WAL, group commit",
            commits=writer.commits,
            commit_p99_ms=writer.commit_p99_ms(),
            metrics_address=self.metrics_address,
            listen_address=self.listen_address,
            allow_unauthenticated=bool(
                settings.listen and not (settings.token_file or settings.tls_client_ca)
            ),
            disks=[_disk_use(path) for path in dests if os.path.isdir(path)],
        )

    @property
    def active_transfers(self) -> int:
        return sum(kind.runner.active_transfers for kind in self._kinds)

    # -- writes ----------------------------------------------------------------------------

    async def submit(self, name: str, kind_name: str, spec: Any) -> tuple[jobs.JobView, bool]:
        """A job of the named kind from its spec message; idempotent by name."""
        kind = self._kinds.named(kind_name)
        job, created = await kind.submit(kind.parse(name, spec))
        view = await self._views.fresh(job.name)
        if created:
            jobs.log_about(job).info("job {} submitted: {:,} items", job.name, view.items_total)
        return view, created

    async def set_limits(self, limits: dict[str, str]) -> None:
        """Change the governor's limits now; every kind looks at its work again."""
        self._governor.change(limits)
        logger.info("governor limits changed: {}", limits)
        self._kinds.wake()

    async def pause(self, name: str) -> jobs.JobView:
        job = await self._move(name, JobState.PAUSED, "pause")
        self._kinds.of(job).runner.stop_job(job.id, cancelled=False)
        return await self._views.fresh(name)

    async def resume(self, name: str) -> jobs.JobView:
        """A paused job goes on; an ended job of a kind that re-reads its input runs again."""
        job = await self._job(name)
        ended = job.state in (JobState.COMPLETED, JobState.FAILED)
        if ended and isinstance(self._kinds.of(job), Rerun):
            await self._move(name, JobState.QUEUED, "resume", only_from=job.state, message="")
        else:
            # Why it was paused (a failed disk, an unwritable manifest) no longer holds.
            await self._move(
                name, JobState.RUNNING, "resume", only_from=JobState.PAUSED, message=""
            )
        self._kinds.wake()
        return await self._views.fresh(name)

    async def cancel(self, name: str) -> jobs.JobView:
        # Its unfinished batches and shards end in the same commit: none stays active.
        job = await self._move(
            name, JobState.CANCELLED, "cancel", message="cancelled", then=jobs.end_batches
        )
        self._kinds.of(job).runner.stop_job(job.id, cancelled=True)
        self._governor.note_hold(job.name, None)  # it will not be scheduled again
        return await self._views.fresh(name)

    async def remove(
        self, name: str, delete_output: bool = False
    ) -> tuple[jobs.JobView, int, outputs.Deleted | None]:
        """Forget an ended job, so its name is free again; with delete_output, delete what it
        wrote too (its kind names it from its rows), else its files stay.

        The paths are listed first (spooled to a file: a job may have millions), then the
        rows go, on the condition that the job did not change meanwhile (a resume, a retry,
        a clean job reopened by its download), and only then are the files deleted: no job
        is ever left whose rows say done for bytes that are gone.
        Returns its last view, how many items it had, and what was deleted (or None).
        """
        view = await self._views.fresh(name)
        listed: tuple[jobs.JobRow, IO[str]] | None = None
        if delete_output:
            listed = await self._readers.call(lambda conn: self._list_output(conn, name))

        def remove(conn: apsw.Connection) -> jobs.JobRow:
            job = self._removable(conn, name)
            if listed is not None and job.updated_at != listed[0].updated_at:
                raise FailedPrecondition(
                    f"job {name!r} changed while its output was being listed (it was resumed, "
                    "retried or reopened); nothing was deleted: try again once it has ended"
                )
            jobs.remove_job(conn, job)
            return job

        try:
            job = await self._writer.call(remove)
        except BaseException:
            if listed is not None:
                listed[1].close()
            raise
        self._forget(job)
        if self.on_remove is not None:
            self.on_remove(view)
        deleted = None
        if listed is not None:
            with listed[1] as spool:
                deleted = await asyncio.to_thread(self._delete_output, job, _spooled(spool))
            for path, why in deleted.failed[:LISTED_FAILURES]:
                jobs.log_about(job).warning("job {} removed, but {} stays: {}", name, path, why)
        if deleted is None:
            what = f"its files stay in {job.dest}"
        else:
            what = f"{deleted.files:,} files ({size_text(deleted.bytes)}) deleted from {job.dest}"
        jobs.log_about(job).info("job {} removed ({}; {})", name, job.state, what)
        return view, view.items_total, deleted

    def _list_output(self, conn: apsw.Connection, name: str) -> tuple[jobs.JobRow, IO[str]]:
        """The removable job and what it wrote, one path per NUL-ended record in a temp file."""
        job = self._removable(conn, name)
        # Handed to the caller, which closes it.
        spool = tempfile.TemporaryFile("w+", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        try:
            for path in self._kinds.of(job).output_of(conn, job):
                spool.write(path + "\0")
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return job, spool

    def _removable(self, conn: apsw.Connection, name: str) -> jobs.JobRow:
        """The job, ended and read by no live job; else refused, saying what to do first."""
        job = jobs.get_job(conn, name)
        if job.state not in TERMINAL:
            raise FailedPrecondition(
                f"job {name!r} is {job.state}: only an ended job can be removed; "
                f"`bfctl cancel {name}` first"
            )
        for other in jobs.all_jobs(conn):
            if other.state not in TERMINAL and self._kinds.of(other).reads(other) == name:
                raise FailedPrecondition(
                    f"job {other.name!r} ({other.state}) reads job {name!r}: "
                    f"let it end or `bfctl cancel {other.name}` first"
                )
        return job

    def _delete_output(self, job: jobs.JobRow, paths: Iterable[str]) -> outputs.Deleted:
        """The job's paths, and the dest's marker when it names this job of this bfd."""
        dest = Path(job.dest)
        owner = outputs.read_marker(dest)
        state_dir = outputs.state_dir_key(self._settings.state_dir)
        if owner is not None and (owner.job_id, owner.state_dir) == (job.id, state_dir):
            paths = itertools.chain(paths, [outputs.MARKER])
        return outputs.delete_paths(dest, paths)

    def _forget(self, job: jobs.JobRow) -> None:
        """Nothing kept in memory under the removed job's id or name outlives its row."""
        self._views.forget(job.name)
        self._governor.note_hold(job.name, None)
        kind = self._kinds.find(job)
        if kind is not None:
            kind.runner.forget_job(job.id)

    async def retry(self, name: str, step: str, error: str) -> tuple[jobs.JobView, int]:
        def requeue(conn: apsw.Connection) -> int:
            job = jobs.get_job(conn, name)
            if job.state == JobState.CANCELLED:
                raise jobs.refusal(job, "retry")
            kind = self._kinds.of(job)
            _check_step(conn, kind, job, step)
            retried = kind.retry(conn, job, step, error)
            if retried and job.state == JobState.FAILED:
                jobs.move_job(conn, job, JobState.QUEUED, message="")
            return retried

        retried = await self._writer.call(requeue)
        self._kinds.wake()
        return await self._views.fresh(name), retried

    # -- verbs of some kinds ---------------------------------------------------------------

    async def export(self, name: str, dest: str) -> Any:
        job = await self._job(name)
        exported = await self._kinds.capable(ItemExport, job, "export").export(job, dest)
        return dataclasses.replace(exported, item_unit=self._kinds.of(job).item_unit)

    async def continue_job(self, name: str) -> jobs.JobView:
        job = await self._job(name)
        await self._kinds.capable(DiskBatches, job, "continue").continue_job(job)
        return await self._views.fresh(name)

    async def swap(self, name: str, dest: Path | None) -> tuple[jobs.JobView, Any]:
        job = await self._job(name)
        swapped = await self._kinds.capable(DiskBatches, job, "swap").swap(job, dest)
        return await self._views.fresh(name), swapped

    async def verify(self, name: str, batch: int | None) -> Any:
        job = await self._job(name)
        return await self._kinds.capable(DiskBatches, job, "verify").verify(job, batch)

    async def plan(self, request: Any) -> Any:
        return await self._kinds.offering(DiskBatches).plan(request)

    async def analyze(self, request: Any) -> Any:
        return await self._kinds.offering(DiskBatches).analyze(request)

    # -- helpers ---------------------------------------------------------------------------

    async def _job(self, name: str) -> jobs.JobRow:
        return await self._readers.call(lambda conn: jobs.get_job(conn, name))

    async def _move(
        self,
        name: str,
        new: JobState,
        verb: str,
        only_from: JobState | None = None,
        message: str | None = None,
        then: Callable[[apsw.Connection, jobs.JobRow], object] | None = None,
    ) -> jobs.JobRow:
        """Move the job; `then` writes what goes with the move, in the same transaction."""

        def move(conn: apsw.Connection) -> jobs.JobRow:
            job = jobs.get_job(conn, name)
            self._kinds.of(job)  # a job no runner here can stop is not moved
            jobs.require_move(job, new, verb, only_from)
            moved = jobs.move_job(conn, job, new, message=message)
            if then is not None:
                then(conn, moved)
            return moved

        return await self._writer.call(move)


def _lived_s(start: int, stop: int, born: int, ended: int) -> float:
    """Seconds of [start, stop) the job lived in (ms in, s out; never 0)."""
    return max(0.001, (min(stop, ended) - max(start, born)) / 1000)


def _disk_use(path: str) -> DiskUse:
    usage = psutil.disk_usage(path)
    return DiskUse(path, usage.total, usage.free)


def _spooled(spool: IO[str]) -> Iterator[str]:
    """The paths _list_output wrote, read back a block at a time."""
    rest = ""
    while block := spool.read(1 << 16):
        *paths, rest = (rest + block).split("\0")
        yield from paths


def _check_step(conn: apsw.Connection, kind: JobKind, job: jobs.JobRow, step: str) -> None:
    """A step filter names a step the job's items can fail at, or one its failures name (a
    step an older bfd wrote); anything else is refused naming those it could be."""
    if not step:
        return
    known = list(kind.steps_of(job))
    known += [g.step for g in kind.failures(conn, job, "", 0).groups if g.step not in known]
    if step not in known:
        raise InvalidArgument(f"job {job.name!r}: {unknown('step', step, known)}")
