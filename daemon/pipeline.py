"""The seam every job kind plugs into, and the registry that holds the kinds.

A job kind (download, scenes, …) is one package under `daemon/` that provides a
`JobKind`: how a submit request is validated, how its job and items are created
in the writer, its part of a job's status view, its failures, retry and boot
repair, and a `Runner` that does the work. The daemon (`app.py`), `Control` and
the servicer loop over the registry; nothing outside a kind's package names it.

Verbs only some kinds have are capabilities: a kind that cuts its jobs into
disk batches is a `DiskBatches`, one whose items can be exported is an
`ItemExport`, one whose ended jobs `resume` runs again over their input is a
`Rerun`, one whose jobs put verified files on disk for another job to consume
is a `VerifiedFiles`. Control (or a consuming kind, through `kinds`) asks the
registry for the capability and refuses the verb, saying why, when the job's
kind has none.

Every method taking a connection runs inside one writer operation or one reader
call; none opens its own transaction.
"""

import asyncio
import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import apsw
from loguru import logger

from bulkforge.daemon import outputs
from bulkforge.daemon.disks import Places, dest_for
from bulkforge.daemon.durable import DiskFailed, disk_errors
from bulkforge.daemon.errors import FailedPrecondition, InvalidArgument
from bulkforge.daemon.failures import FailureReport
from bulkforge.daemon.governor import Governor
from bulkforge.daemon.item_table import ItemTable
from bulkforge.daemon.jobs import JobRow, JobView, all_jobs, existing_job, job_by_id, jobs_in_states
from bulkforge.daemon.machines import Machine, Tone, TransitionConflict
from bulkforge.daemon.machines.job import RUNNABLE
from bulkforge.daemon.progress import throughput_bucket_ms
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.store import Schema, Store, StoreFatal
from bulkforge.daemon.transfer.engine import Engine

K = TypeVar("K")


@dataclass(frozen=True)
class Services:
    """What every kind's runner is built from: the daemon's shared parts."""

    settings: Settings
    store: Store
    governor: Governor
    # The one HTTP client and connection budget of every kind.
    transfers: Engine


class Runner(Protocol):
    """The asyncio side of a kind: one long-running task and what others ask of it."""

    async def run(self) -> None:
        """Work on the kind's live jobs until drained."""

    def wake(self) -> None:
        """Look at the jobs again now (one was submitted, resumed, retried …)."""

    def stop_job(self, job_id: int, cancelled: bool) -> None:
        """Interrupt a paused or cancelled job's work; what it leaves goes back to pending.

        A cancelled job's work never comes back: what the runner kept of it is forgotten
        too (forget_job)."""

    def forget_job(self, job_id: int) -> None:
        """The job was cancelled or removed: drop everything kept in memory under its id
        (or its rows' ids), so nothing of it is ever counted for another job."""

    async def drain(self, timeout: float) -> None:
        """Stop taking work, interrupt what runs, and wait up to timeout for it to settle."""

    def in_flight_bytes(self, job_id: int) -> int:
        """Bytes of work under way for the job and not yet in the store's counts."""

    @property
    def active_transfers(self) -> int:
        """Transfers (or items) on the network now."""


class JobLoop(ABC):
    """What most runners share: a pass over the kind's live jobs whenever woken, and at
    least every IDLE_POLL_S; store writes nobody awaits, waited for by the drain."""

    #: The kind whose queued and running jobs each pass looks at.
    kind_name: str
    IDLE_POLL_S = 1.0

    def __init__(self, services: Services):
        self._readers = services.store.readers
        self._wake = asyncio.Event()
        self._stopping = False
        self._background: set[asyncio.Future] = set()

    def wake(self) -> None:
        self._wake.set()

    @abstractmethod
    async def _schedule_job(self, job: JobRow) -> None:
        """One job's part of a pass: start what it may start now."""

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                live = await self._readers.call(
                    lambda conn: jobs_in_states(conn, RUNNABLE, kind=self.kind_name)
                )
                for job in live:
                    if self._stopping:
                        return
                    try:
                        await self._schedule_job(job)
                    except TransitionConflict:
                        # Paused or cancelled since it was read: the next pass sees it as it is.
                        logger.debug("{}: job {} moved meanwhile", self.kind_name, job.name)
            except StoreFatal:
                return
            except Exception:
                logger.exception("{}: a scheduling pass failed; retrying in 1 s", self.kind_name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.IDLE_POLL_S)

    def _in_background(self, write: Awaitable) -> None:
        """A store write nobody awaits; the drain waits for it before the store closes."""
        future = asyncio.ensure_future(write)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    async def _stop_tasks(self, tasks: list[asyncio.Task], timeout: float) -> None:
        """The drain's common part: take nothing new, cancel tasks, wait for them and writes."""
        self._stopping = True
        self.wake()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)


class Cooldowns:
    """Work whose run failed (a full disk, a worker killed) waits 2 s, then 4 s, before
    its next try; the third failure is final. Keys are the runner's own tuples, the job's
    id first, so a cancelled or removed job's are forgotten with it (forget_job)."""

    def __init__(self, base_s: float = 1.0, attempts: int = 3):
        self.base_s = base_s
        self.attempts = attempts
        # (job id, …) -> (failures, monotonic time before which it is not tried again)
        self._failed: dict[tuple, tuple[int, float]] = {}

    def failed(self, key: tuple) -> tuple[int, bool]:
        """Count a failure: (how many so far, whether it was the last allowed)."""
        count = self._failed.get(key, (0, 0.0))[0] + 1
        if count >= self.attempts:
            self._failed.pop(key, None)
            return count, True
        self._failed[key] = (count, time.monotonic() + self.base_s * 2**count)
        return count, False

    def cooling(self) -> set:
        """Keys that must not be tried yet."""
        now = time.monotonic()
        return {key for key, (_, until) in self._failed.items() if until > now}

    def succeeded(self, key: tuple) -> None:
        self._failed.pop(key, None)

    def forget_job(self, job_id: int) -> None:
        for key in [key for key in self._failed if key[0] == job_id]:
            del self._failed[key]


class Request(Protocol):
    """What every kind's validated submit request offers."""

    name: str
    dest: Path

    def spec(self) -> dict:
        """The canonical parameters: stored with the job, compared for idempotence."""


class JobKind(ABC):
    """One kind of job behind the seam; one instance per daemon run."""

    #: The kind's name: stored in jobs.kind, and the SubmitRequest spec field that carries it.
    name: str
    #: What the status table calls its batch rows: "disk" batches or item "shard"s.
    batch_unit: str
    #: What its items are, plural ("files", "parts"): how people read every count of them.
    item_unit: str
    #: What its throughput buckets (`bfctl stats`) count, plural: its items unless it says.
    throughput_unit: str = ""
    #: Its item machine, declared in its package's machine.py (`machines.item_machine`).
    item_machine: Machine
    #: The steps its items fail at: what `failures --step` and `retry --step` may name.
    failure_steps: tuple[str, ...]

    def __init__(self, services: Services):
        self.services = services
        self.writer = services.store.writer
        self.readers = services.store.readers
        # Every kind of this daemon, set by the registry: for a kind that consumes another's
        # jobs (clean --after a download), through a capability, never by name.
        self.kinds: Kinds | None = None

    @classmethod
    def tables(cls) -> Schema:
        """Its tables: `tables.sql` and `migrations/` in its package. The registry hands them
        to the store, which applies them after the core's, in the registry's order."""
        return Schema.of_package(cls.__module__.rpartition(".")[0])

    @property
    def item_tones(self) -> Mapping[str, Tone]:
        """Its item machine's states in the order they happen, each with its tone."""
        return self.item_machine.tone

    @property
    @abstractmethod
    def runner(self) -> Runner: ...

    @abstractmethod
    def parse(self, name: str, spec: Any) -> Request:
        """The submit request from its proto message, validated; raises ValidationError."""

    def steps_of(self, job: JobRow) -> tuple[str, ...]:
        """The steps a job's items can fail at (a scenes job adds its plug-in steps)."""
        return self.failure_steps

    async def submit(self, request: Request) -> tuple[JobRow, bool]:
        """The job of the request, created unless one of that name and spec exists.

        A resubmission answers at once, from the store, without reading the input again;
        the same name with other parameters is refused (ALREADY_EXISTS). A kind with
        numbered output refuses a dest holding another job's (NumberedOutput).
        """
        spec = request.spec()
        async with dest_for(request.dest, Places.of(self.services.settings)) as dest:
            existing = await self.readers.call(lambda c: existing_job(c, request.name, spec))
            if existing is not None:
                return existing, False
            if isinstance(self, NumberedOutput):
                job, created = await self.claim_dest(request, spec, dest)
            else:
                job, created = await self.create(request, spec)
        if created:
            self.runner.wake()
        return job, created

    @abstractmethod
    async def create(self, request: Any, spec: dict) -> tuple[JobRow, bool]:
        """Read what the request names and create the job and its first items in the writer.

        The last writer operation creates the job row idempotently (jobs.existing_job):
        two submits of one name may race to it.
        """

    @abstractmethod
    def fill_view(self, conn: apsw.Connection, view: JobView) -> None:
        """The kind's part of a status view: counts by item state, bytes, totals."""

    @abstractmethod
    def failures(self, conn: apsw.Connection, job: JobRow, step: str, limit: int) -> FailureReport:
        """Failed items by step and error class, and up to `limit` of them listed."""

    @abstractmethod
    def throughput(self, conn: apsw.Connection, job: JobRow) -> tuple[list[tuple], int]:
        """((bucket start ms, items, bytes) per bucket, bucket length in ms)."""

    @abstractmethod
    def retry(self, conn: apsw.Connection, job: JobRow, step: str, error: str) -> int:
        """Failed items matching the filters back to pending; how many."""

    @abstractmethod
    def repair(self, conn: apsw.Connection) -> None:
        """Boot repair: rows a crash left in flight move to a defined state, one log line each."""

    def reads(self, job: JobRow) -> str | None:
        """The name of the job whose output this one reads (clean --after), if any."""
        return None

    @abstractmethod
    def output_of(self, conn: apsw.Connection, job: JobRow) -> Iterator[str]:
        """What the job wrote, from its rows: paths relative to its dest (files, or
        directories wholly its own: a shard's folder), its temporary names and its own
        sidecars, read as they are deleted (a job may have millions). `bfctl remove
        --delete-output` deletes those that exist; never a glob."""


class ItemRows:
    """failures, throughput, retry and repair of a kind whose items sit in one table with
    the shared failure columns (scenes, clean, generate): the shared SQL of its
    `item_table` (an `ItemTable`, which the kind declares), and what boot repair says."""

    item_table: ItemTable
    # "item(s) were running": what boot repair logs before "at shutdown -> pending".
    in_flight: str

    def failures(self, conn: apsw.Connection, job: JobRow, step: str, limit: int):
        return self.item_table.report(conn, job.id, step, limit)

    def throughput(self, conn: apsw.Connection, job: JobRow) -> tuple[list[tuple], int]:
        bucket = throughput_bucket_ms(job)
        return self.item_table.throughput(conn, job.id, bucket), bucket

    def retry(self, conn: apsw.Connection, job: JobRow, step: str, error: str) -> int:
        return self.item_table.retry(conn, job.id, step, error)

    def repair(self, conn: apsw.Connection) -> None:
        for name, count in self.item_table.repair(conn):
            logger.bind(job=name, kind=self.name).info(
                "repair: job {}: {:,} {} at shutdown -> pending", name, count, self.in_flight
            )


class DiskBatches(ABC):
    """A kind whose jobs fill disks batch by batch, and whose sources can be planned dry."""

    @abstractmethod
    async def continue_job(self, job: JobRow) -> None: ...

    @abstractmethod
    async def swap(self, job: JobRow, dest: Path | None) -> Any: ...

    @abstractmethod
    async def verify(self, job: JobRow, batch: int | None) -> Any: ...

    @abstractmethod
    async def plan(self, request: Any) -> Any: ...

    @abstractmethod
    async def analyze(self, request: Any) -> Any: ...


class NumberedOutput(ABC):
    """A kind whose output is numbered per job (scenes shards, generate parts): a second
    job into its dest would overwrite the first's low numbers and leave its high ones
    beside them, so a dest holds one such job's output. Submit refuses a dest that another
    job of the store writes to, or that holds another job's output, present or removed,
    of this bfd or another: found by the dest's marker (`outputs.MARKER`), else by the
    kind's own output names. Kinds without it re-run incrementally over a shared dest."""

    #: What its numbered pieces are called, plural: "shards", "parts".
    output_unit: str

    @abstractmethod
    def numbered_output(self, dest: Path) -> int:
        """How many of the kind's numbered pieces sit in dest, known by their names."""

    async def claim_dest(self, request: Any, spec: dict, dest: Path) -> tuple[JobRow, bool]:
        """create(), once no other job's output is in dest; then the dest's marker names it.

        Claims are one at a time, so two submits into one empty dest cannot both pass."""
        assert isinstance(self, JobKind)
        async with _DEST_CLAIMS:
            state_dir = outputs.state_dir_key(self.services.settings.state_dir)
            others = await self.readers.call(lambda c: _other_jobs_into(c, request.name, dest))
            with disk_errors(dest):  # a failed disk refuses the submit by what it is
                found, unit = await asyncio.to_thread(self._numbered_in, dest)
            owner = await asyncio.to_thread(outputs.read_marker, dest)
            if owner is None:
                await asyncio.to_thread(_refuse_marked_above, dest)
            if others and found:
                _refuse_owned(dest, found, unit, others[0].name, "")
            if others:  # it has written nothing there yet
                _refuse_shared(dest, self.output_unit, others[0])
            if found:
                await self._refuse_found(dest, found, unit, owner, state_dir)
            job, created = await self.create(request, spec)
            if created:
                marker = outputs.Owner(job.name, job.kind, job.id, state_dir)
                try:
                    await asyncio.to_thread(outputs.write_marker, dest, marker)
                except (OSError, DiskFailed) as exc:
                    # The job stands: while it is listed the store names its dest; once it
                    # is removed its pieces are still known by their names.
                    logger.warning("job {}: cannot write {}: {}", job.name, outputs.MARKER, exc)
            return job, created

    def _numbered_in(self, dest: Path) -> tuple[int, str]:
        """The numbered pieces of any kind in dest (a removed scenes job's shards refuse a
        generate job as much as a scenes job), and what they are called."""
        assert isinstance(self, JobKind) and self.kinds is not None
        for kind in self.kinds:
            if isinstance(kind, NumberedOutput) and (found := kind.numbered_output(dest)):
                return found, kind.output_unit
        return 0, self.output_unit

    async def _refuse_found(
        self, dest: Path, found: int, unit: str, owner: outputs.Owner | None, state_dir: str
    ) -> None:
        """Whose the pieces found are: the marker's job, here or removed or another bfd's."""
        assert isinstance(self, JobKind)
        if owner is None:  # an older bfd, or a hand, put them there
            _refuse_owned(dest, found, unit, "", "")
        ours = owner.state_dir == state_dir
        row = await self.readers.call(lambda c: job_by_id(c, owner.job_id)) if ours else None
        alive = row is not None and row.name == owner.name
        whose = "" if alive else "removed" if ours else f"of the bfd at {owner.state_dir}"
        _refuse_owned(dest, found, unit, owner.name, whose)


_DEST_CLAIMS = asyncio.Lock()


def _other_jobs_into(conn: apsw.Connection, name: str, dest: Path) -> list[JobRow]:
    """Jobs of the store, other than `name`, whose dest is dest, or lies inside it, or
    holds it (as given or resolved): a reader of either directory would see both."""
    resolved = Path(os.path.realpath(dest))
    return [
        job
        for job in all_jobs(conn)
        if job.name != name
        and any(_nested(Path(mine), Path(theirs)) for mine, theirs in (
            (dest, job.dest), (resolved, os.path.realpath(job.dest))
        ))
    ]  # fmt: skip


def _nested(one: Path, other: Path) -> bool:
    return one.is_relative_to(other) or other.is_relative_to(one)


def _refuse_marked_above(dest: Path) -> None:
    """Refuse a dest inside the dest of a numbered-output job (removed, or another bfd's),
    known by the marker it left in a directory above."""
    for above in Path(os.path.realpath(dest)).parents:
        owner = outputs.read_marker(above)
        if owner is not None:
            raise FailedPrecondition(
                f"dest {dest} lies inside {above}, the dest of {owner.kind} job "
                f"{owner.name!r} (its {outputs.MARKER} says so): a reader of {above} would "
                f"take both jobs' output for one dataset. Choose a dest outside it"
            )


def _refuse_shared(dest: Path, unit: str, other: JobRow) -> None:
    """Refuse a submit into the dest of another job of this store (it may not have
    written anything yet)."""
    raise FailedPrecondition(
        f"dest {dest} is the dest of {other.kind} job {other.name!r} already: a new job's "
        f"{unit} would mix with its output. Choose another dest, or remove that job with "
        f"`bfctl remove {other.name} --delete-output` once it has ended"
    )


def _refuse_owned(dest: Path, found: int, unit: str, owner: str, whose: str) -> None:
    """Refuse a submit into a dest holding another job's output, saying whose and how to
    free it."""
    what = f"{found:,} {unit if found > 1 else unit.removesuffix('s')}"
    if not owner:
        job, hint = "a job bfd no longer knows", "move or delete them yourself"
    elif whose == "removed":
        job = f"{owner!r}; removed"
        hint = "delete them yourself (bfd forgot that job, so it cannot)"
    elif whose:
        job = f"{owner!r}, {whose}"
        hint = f"remove them with `bfctl remove {owner} --delete-output` on that bfd"
    else:
        job = repr(owner)
        hint = f"remove them with `bfctl remove {owner} --delete-output` once it has ended"
    raise FailedPrecondition(
        f"dest {dest} holds {what} of another job ({job}); a new job's would mix with "
        f"them. Choose another dest, or {hint}"
    )


class ItemExport(ABC):
    """A kind whose items' outcomes can be exported as files."""

    @abstractmethod
    async def export(self, job: JobRow, dest: str) -> Any:
        """The job's items' outcomes as files under dest (an absolute path, created)."""


class Rerun:
    """A kind whose ended jobs `resume` queues again: each start reads its input as it is now."""


# A verified file: (its row id, the directory its path is relative to, path, sha256 if known).
VerifiedFile = tuple[int, str, str, str | None]


class VerifiedFiles(ABC):
    """A kind whose jobs put verified files on disk that another job may consume."""

    @abstractmethod
    def verified_files(
        self, conn: apsw.Connection, job: JobRow, after: int
    ) -> tuple[list[VerifiedFile], int]:
        """Files the job, and later jobs of its kind into its dest, have verified, id > after,
        in id order (a path verified again by a later job comes again, later); and the id
        up to which every file has settled for good: the next call's `after`."""


# What a job of a kind lacking a capability is told, by capability.
_LACKS = {
    DiskBatches: ", which has no disk batches",
    ItemExport: "; export writes the items of an item job",
    VerifiedFiles: ", which puts no verified files on disk",
}


class Kinds:
    """The registry: every kind of this daemon, by name."""

    def __init__(self, kinds: Iterable[JobKind]):
        self._by_name = {kind.name: kind for kind in kinds}
        for kind in self:
            kind.kinds = self

    def __iter__(self):
        return iter(self._by_name.values())

    def named(self, name: str) -> JobKind:
        """The kind a submit request names; refused when bfd knows none by that name."""
        kind = self._by_name.get(name)
        if kind is None:
            known = " or ".join(sorted(self._by_name))
            raise InvalidArgument(f"the request names no job spec ({known})")
        return kind

    def find(self, job: JobRow) -> JobKind | None:
        """The job's kind, or None for a kind this bfd does not run (a newer bfd stored it)."""
        return self._by_name.get(job.kind)

    def of(self, job: JobRow) -> JobKind:
        """The job's kind; a job of a kind this bfd does not run is refused, saying so."""
        kind = self.find(job)
        if kind is None:
            raise FailedPrecondition(
                f"job {job.name!r} is a {job.kind} job, which this bfd does not run "
                "(was it submitted to a newer bfd on this state dir?)"
            )
        return kind

    def capable(self, capability: type[K], job: JobRow, verb: str) -> K:
        """The job's kind as the capability a verb needs; refused, saying why, without it."""
        kind = self.of(job)
        if not isinstance(kind, capability):
            raise FailedPrecondition(
                f"cannot {verb} job {job.name!r}: it is a {job.kind} job{_LACKS[capability]}"
            )
        return kind

    def offering(self, capability: type[K]) -> K:
        """The kind that offers a job-less capability (planning a source)."""
        for kind in self:
            if isinstance(kind, capability):
                return kind
        raise FailedPrecondition("no job kind of this bfd offers that")

    def wake(self) -> None:
        for kind in self:
            kind.runner.wake()
