"""The downloader pipeline: hands the files of running download jobs to transfers.

One asyncio task loops: start queued jobs, claim files for the connections of
the transfer engine (CLAIM_AHEAD per connection), and finish jobs that have
nothing left. Each transfer is a task of its own; every state it reaches is
committed through the writer. Each request of a transfer holds one slot of the
engine's connection budget, shared with every other kind, while it is on the
network.

A file counts as receiving while it waits for or receives its bytes. Once they
are verified the next file is claimed while this one waits for the installer to
make its group durable and for the writer to commit it `done`: small files
spend longer being made durable than being received, so waiting for that would
leave the connections idle.
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.downloader import batches, files, register, segments
from bulkforge.daemon.downloader.access import Access, access_for
from bulkforge.daemon.downloader.fetch import Fetcher
from bulkforge.daemon.downloader.install import Installable, Installer, InstallFailed
from bulkforge.daemon.downloader.listing import Batching
from bulkforge.daemon.downloader.machine import IN_FLIGHT, FileState
from bulkforge.daemon.downloader.paths import partial_path
from bulkforge.daemon.downloader.segments import Ledger
from bulkforge.daemon.downloader.sources.binance import (
    Sidecar,
    fetch_sidecar,
    install_sidecar,
    sidecar_row,
)
from bulkforge.daemon.durable import DiskFailed
from bulkforge.daemon.errors import Refused
from bulkforge.daemon.failures import Failure, backoff_s
from bulkforge.daemon.governor import (
    WAITING_FOR_MEMORY,
    WAITING_FOR_SPACE,
    Usage,
)
from bulkforge.daemon.machines import TransitionConflict
from bulkforge.daemon.machines.batch import BatchState
from bulkforge.daemon.machines.job import RUNNABLE, JobState
from bulkforge.daemon.pipeline import Services
from bulkforge.daemon.store import StoreFatal, now_ms
from bulkforge.daemon.transfer.failed import TransferFailed
from bulkforge.proto.units import size_text

IDLE_POLL_S = 1.0
# Files claimed per transfer slot (see _slots).
CLAIM_AHEAD = 2
# How often a job held back by the disk threshold looks again for freed space.
SPACE_POLL_S = 0.25


@dataclass
class _Transfer:
    job_id: int
    task: asyncio.Task | None = None
    bytes: int = 0
    # Claimed and not yet received: waiting for a slot or holding one (module docstring).
    receiving: bool = True
    size: int = 0
    # The destination filesystem (st_dev), whose disk threshold counts this file.
    device: int | None = None
    # Whether its partial counts as the job's progress once interrupted (a pause): not
    # when the job was cancelled or removed.
    keep_partial: bool = True

    @property
    def remaining(self) -> int:
        """Bytes still to land on the disk: promised against the disk threshold."""
        return max(0, self.size - self.bytes)

    def add(self, count: int) -> None:
        self.bytes += count


@dataclass(frozen=True)
class _Room:
    bytes: int
    why: str


@dataclass
class _Plan:
    """What one scheduling pass decided for one job."""

    claimed: list[files.FileRow] = field(default_factory=list)
    next_retry_at: int | None = None
    # Batches whose every file is in: their manifests are written, then they are complete.
    verifying: list[batches.BatchRow] = field(default_factory=list)
    # Why the governor holds the job back (the disk threshold), or None.
    held: str | None = None


class Downloader:
    def __init__(self, services: Services):
        settings = self._settings = services.settings
        self._governor = services.governor
        self._engine = services.transfers
        self._writer = services.store.writer
        self._readers = services.store.readers
        self._transfers: dict[int, _Transfer] = {}
        # Interrupted transfers (a pause): file id -> (job id, bytes in the partial kept for
        # the resume), still counted as progress so a pause does not send the bytes back.
        self._kept: dict[int, tuple[int, int]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        ledger = Ledger(self._writer, int(settings.segment_size), settings.segments_per_file)
        self._fetcher = Fetcher(self._engine, ledger)
        self._installer = Installer(self._commit_done)
        self._access: dict[int, Access] = {}
        self._releases: set[asyncio.Future] = set()

    # -- what others ask of the pipeline -------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    @property
    def active_transfers(self) -> int:
        return self._engine.budget.busy(register.KIND)

    def in_flight_bytes(self, job_id: int) -> int:
        """Bytes received of files not yet done: in flight, or kept by a pause."""
        flying = sum(t.bytes for t in self._transfers.values() if t.job_id == job_id)
        return flying + sum(size for job, size in self._kept.values() if job == job_id)

    def stop_job(self, job_id: int, cancelled: bool) -> None:
        """Interrupt the transfers of a paused or cancelled job; their partials stay on disk
        (a paused job's count as its progress until it resumes)."""
        for transfer in list(self._transfers.values()):
            if transfer.job_id == job_id and transfer.task is not None:
                transfer.task.cancel()
        if cancelled:
            self.forget_job(job_id)

    def forget_job(self, job_id: int) -> None:
        """Nothing of the job is counted or kept any more: its partials, its credentials,
        and the partials of its transfers still ending."""
        for transfer in self._transfers.values():
            if transfer.job_id == job_id:
                transfer.keep_partial = False
        for file_id in [f for f, (job, _) in self._kept.items() if job == job_id]:
            del self._kept[file_id]
        self._access.pop(job_id, None)

    async def drain(self, timeout: float) -> None:
        """Stop taking work and interrupt every transfer, recording each as pending."""
        self._stopping = True
        self.wake()
        tasks = [t.task for t in self._transfers.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._releases:
            await asyncio.wait(list(self._releases), timeout=timeout)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                next_due = await self._schedule()
            except StoreFatal:
                return
            except Exception:
                # A pass that fails (a busy store, a disk gone from under describe_disk)
                # must not end the pipeline while the daemon keeps accepting jobs.
                logger.exception("downloader: a scheduling pass failed; retrying in 1 s")
                next_due = now_ms() + 1000
            await self._sleep_until(next_due)

    async def _sleep_until(self, due_ms: int | None) -> None:
        delay = IDLE_POLL_S
        if due_ms is not None:
            delay = min(delay, max(0.01, (due_ms - now_ms()) / 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _schedule(self) -> int | None:
        """One pass over the live download jobs; returns when the next retry falls due."""
        live = await self._readers.call(
            lambda conn: jobs.jobs_in_states(conn, RUNNABLE, kind=register.KIND)
        )
        next_due: int | None = None
        for job in live:
            if self._stopping:
                break
            free = CLAIM_AHEAD * self._governor.max_connections - self._receiving()
            busy = any(t.job_id == job.id for t in self._transfers.values())
            if not busy and not await asyncio.to_thread(os.path.isdir, job.dest):
                self._dest_gone(job)
                continue
            device, room = await self._room(job)
            plan = await self._writer.call(
                lambda conn, job=job, free=free, busy=busy, room=room: _plan_job(
                    conn, job.id, free, busy, room
                )
            )
            if self._stopping:  # drained while this pass was claiming: give them back
                await asyncio.gather(*(self._release(row.id) for row in plan.claimed))
                break
            self._governor.note_hold(job.name, plan.held)
            for row in plan.claimed:
                self._start_transfer(job, row, device)
            for batch in plan.verifying:
                await self._complete_batch(job, batch)
            if plan.next_retry_at is not None:
                next_due = min(next_due or plan.next_retry_at, plan.next_retry_at)
        return next_due

    async def _complete_batch(self, job: jobs.JobRow, batch: batches.BatchRow) -> None:
        """Write the batch's manifest onto its disk, then mark it complete."""
        if Batching.of_spec(json.loads(job.spec)) is not None:
            rows = await self._readers.call(
                lambda conn: batches.manifest_rows(conn, job.id, batch.index)
            )
            header = batches.manifest_header(job.name, batch, len(rows))
            path = batches.manifest_path(Path(job.dest), job.name, batch.index)
            try:
                await asyncio.to_thread(batches.write_manifest, path, header, rows)
            except DiskFailed as exc:
                # The batch waits for its manifest again; the disk's jobs are held.
                await self._writer.call(lambda conn: batches.move(conn, batch, BatchState.ACTIVE))
                self._governor.disk_failed(job.id, exc)
                return
            except OSError as exc:
                await self._writer.call(
                    lambda conn, error=exc: _manifest_failed(conn, job, batch, error)
                )
                return
        await self._writer.call(lambda conn: _batch_complete(conn, job, batch))
        self.wake()

    def _receiving(self) -> int:
        return sum(1 for t in self._transfers.values() if t.receiving)

    def _received(self, transfer: _Transfer) -> None:
        transfer.receiving = False
        self.wake()

    def _dest_gone(self, job: jobs.JobRow) -> None:
        """A running job's dest directory is gone (its disk unmounted, or a disk that failed
        came back without it): the job is held as on a failed disk, not each file failed
        for want of it. Once the directory is back (mounted, or made), `bfctl resume`: bfd
        cannot tell it from a bare mount point, where the job must not write."""
        why = (
            f"{job.dest} is gone (its disk unmounted, or it lost the directory): mount it or "
            f"make the directory, then `bfctl resume {job.name}`"
        )
        self._governor.disk_failed(job.id, DiskFailed(why))

    async def _room(self, job: jobs.JobRow) -> tuple[int | None, _Room | None]:
        """The job's destination filesystem and what the disk threshold leaves on it.

        Bytes still to come of the transfers in flight there are promised already.
        """
        try:
            device, usage = await asyncio.to_thread(_device_and_usage, Path(job.dest))
        except OSError:
            return None, None  # dest gone: its transfers fail with a clear `dest` error
        if memory := self._governor.memory_hold():
            return device, _Room(0, memory)
        reserved = sum(t.remaining for t in self._transfers.values() if t.device == device)
        room = self._governor.disk.room_of(usage, reserved)
        return device, _Room(room.bytes, room.describe(job.dest))

    def _start_transfer(self, job: jobs.JobRow, row: files.FileRow, device: int | None) -> None:
        transfer = _Transfer(job.id, size=row.size or 0, device=device)
        self._kept.pop(row.id, None)  # counted again as it resumes
        self._transfers[row.id] = transfer
        with jobs.working_on(job):  # the transfer's log lines name its job and kind
            transfer.task = asyncio.create_task(self._transfer(job, row, transfer))
        transfer.task.add_done_callback(lambda task: self._transfer_ended(row.id, transfer, task))

    def _transfer_ended(self, file_id: int, transfer: _Transfer, task: asyncio.Task) -> None:
        """Every end of a transfer, even a cancel that came before its first step."""
        if self._transfers.get(file_id) is transfer:
            del self._transfers[file_id]
        if task.cancelled():
            # Paused, cancelled or drained: the row goes back to pending, partial kept.
            if transfer.bytes and transfer.keep_partial:
                self._kept[file_id] = (transfer.job_id, transfer.bytes)
            release = asyncio.ensure_future(self._release(file_id))
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)
        self.wake()

    # -- one transfer ----------------------------------------------------------------------

    async def _transfer(self, job: jobs.JobRow, row: files.FileRow, transfer: _Transfer) -> None:
        state = FileState.DOWNLOADING
        try:
            row, sidecar = await self._with_sidecar_checksum(row, job)
            received = await self._fetcher.receive(
                row,
                Path(job.dest),
                transfer.add,
                lambda v: self._remember_validator(row.id, v),
                await self._access_for(job),
            )
            # Not awaited: the writer applies operations in order, so this lands before
            # the `done` below, and a file's verification need not wait for a commit.
            self._writer.submit(lambda conn: files.to_verifying(conn, row.id, received.validator))
            state = FileState.VERIFYING
            try:
                Fetcher.verify(row, received)
            except TransferFailed:
                await self._fetcher.discard(row, received)
                raise
            self._received(transfer)
            if sidecar is not None:  # a pair is one unit: the zip's sidecar goes first
                await self._install_sidecar(job, row, sidecar)
            try:
                await self._installer.install(received.installable(row.id))
            except InstallFailed as exc:
                raise TransferFailed(exc.failure) from None
        except TransferFailed as exc:
            # Shielded: a pause landing now must not drop the failure's record.
            await asyncio.shield(self._record_failure(row, state, exc.failure))
        except DiskFailed as exc:
            # Neither done nor failed: the file is fetched again once its disk is back.
            logger.error("job {} file {}: {}", job.name, row.path, exc)
            await asyncio.shield(self._release(row.id))
            self._governor.disk_failed(job.id, exc)
        except StoreFatal:
            pass  # the writer has already asked the daemon to stop
        except Exception:
            logger.exception("job {} file {}: unexpected error in transfer", job.name, row.path)
            failure = Failure("internal", "bug", "internal error; see the bfd log", False)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._record_failure(row, state, failure))

    async def _commit_done(self, durable: list[Installable]) -> list[Exception | None]:
        """One store operation moves a whole durable group to done."""
        return await self._writer.call(lambda conn: _done(conn, durable))

    async def _with_sidecar_checksum(
        self, row: files.FileRow, job: jobs.JobRow
    ) -> tuple[files.FileRow, Sidecar | None]:
        """A zip listed with a `.CHECKSUM` sidecar is verified against the sidecar's sha256;
        the sidecar comes back too, to be installed with the zip."""
        if not row.checksum_url or row.sha256:
            return row, None
        sidecar = await fetch_sidecar(
            self._engine, register.KIND, row.checksum_url, row.path, await self._access_for(job)
        )
        return dataclasses.replace(row, sha256=sidecar.sha256), sidecar

    async def _install_sidecar(self, job: jobs.JobRow, row: files.FileRow, sidecar: Sidecar):
        """The sidecar the zip was verified against, durable beside it before the zip is."""
        try:
            await asyncio.to_thread(install_sidecar, Path(job.dest), row.path, sidecar)
        except DiskFailed:
            raise
        except OSError as exc:
            message = f"cannot write the sidecar of {row.path}: {exc.strerror or exc}"
            raise TransferFailed(Failure("rename", "io", message, True)) from None
        # Its own row (done earlier, with the bytes upstream had then) says what is there now.
        # Not awaited: the writer applies operations in order, so it lands before the zip's
        # `done`; a crash before it leaves the zip undone, fetched again, recorded again.
        path, size, sha256, md5 = sidecar_row(row.path, sidecar)
        self._writer.submit(
            lambda conn: files.record_rewritten(conn, job.id, path, size, sha256, md5)
        )

    async def _access_for(self, job: jobs.JobRow) -> Access:
        """The job's credentials for its requests, built once (boto3 is slow to start)."""
        if job.id not in self._access:
            try:
                self._access[job.id] = await asyncio.to_thread(access_for, job.spec)
            except Refused as exc:
                raise TransferFailed(Failure("connect", "auth", str(exc), False)) from None
        return self._access[job.id]

    def _remember_validator(self, file_id: int, validator: str | None) -> None:
        # Not awaited: it only has to land before a later resume, and the writer
        # applies operations in order, so it precedes this file's next transition.
        self._writer.submit(lambda conn: files.record_validator(conn, file_id, validator))

    async def _record_failure(self, row: files.FileRow, state: FileState, failure: Failure) -> None:
        retry_at = self._retry_at(row.attempts + 1, failure)
        await self._writer.call(lambda conn: files.to_failed(conn, row, state, failure, retry_at))
        logger.info(
            "file {} failed at {} ({}): {}; attempt {}{}",
            row.path,
            failure.step,
            failure.error_class,
            failure.message,
            row.attempts + 1,
            "" if retry_at else ", not retried automatically",
        )

    def _retry_at(self, attempts: int, failure: Failure) -> int | None:
        delay = backoff_s(self._settings, attempts, failure)
        return None if delay is None else now_ms() + int(delay * 1000)

    async def _release(self, file_id: int) -> None:
        with contextlib.suppress(StoreFatal):
            await self._writer.call(lambda conn: _release_in_flight(conn, file_id))


def _done(conn: apsw.Connection, durable: list[Installable]) -> list[Exception | None]:
    """Per file None, or why it is not done (it was paused or cancelled under its install)."""
    moved = set(files.to_done(conn, {item.file_id: (item.size, item.sha256) for item in durable}))
    for item in durable:
        if item.ranged and item.file_id in moved:
            segments.forget(conn, item.file_id)
    return [
        None
        if item.file_id in moved
        else TransitionConflict(f"file {item.file_id} was no longer verifying when it was done")
        for item in durable
    ]


def _batch_complete(conn: apsw.Connection, job: jobs.JobRow, batch: batches.BatchRow) -> None:
    batches.move(conn, batch, BatchState.COMPLETE)
    logger.info("job {}: batch {} complete ({} files)", job.name, batch.index, batch.files)


def _manifest_failed(
    conn: apsw.Connection, job: jobs.JobRow, batch: batches.BatchRow, exc: OSError
) -> None:
    """A disk that will not take the manifest: stop the job, keep the batch open, say why."""
    batches.move(conn, batch, BatchState.ACTIVE)
    message = (
        f"cannot write the manifest of batch {batch.index} into {job.dest}: {exc.strerror}; "
        f"fix the disk, then `bfctl resume {job.name}`"
    )
    current = jobs.get_job(conn, job.name)
    if current.state == JobState.RUNNING:
        jobs.move_job(conn, current, JobState.PAUSED, message=message)
    logger.error("job {}: {}", job.name, message)


def _release_in_flight(conn: apsw.Connection, file_id: int) -> None:
    row = conn.execute("SELECT state FROM files WHERE id = ?", (file_id,)).fetchone()
    if row and FileState(row[0]) in IN_FLIGHT:
        files.to_pending(conn, file_id, FileState(row[0]))


def _plan_job(
    conn: apsw.Connection, job_id: int, free: int, busy: bool, room: _Room | None = None
) -> _Plan:
    """In one transaction: start a queued job, claim files, or move its batches on."""
    job = jobs.job_by_id(conn, job_id)
    if job is None:
        return _Plan()
    if job.state == JobState.QUEUED:
        job = _start_job(conn, job)
    elif job.state != JobState.RUNNING:
        return _Plan()
    plan = _Plan()
    if free > 0:
        budget = room.bytes if room is not None else files.UNLIMITED
        # No room at all (the threshold reached, or memory held): nothing new starts, not
        # even a file of unknown size, which the budget would count as empty.
        if budget > 0:
            plan.claimed = files.claim(conn, job_id, free, now_ms(), budget)
        if not plan.claimed and room is not None:
            plan.claimed = _claim_what_is_there(conn, job, free, budget)
        if not plan.claimed and room is not None and files.has_pending(conn, job_id):
            plan.held = room.why
            plan.next_retry_at = now_ms() + int(SPACE_POLL_S * 1000)
    _show_hold(conn, job, plan.held)
    if plan.claimed or busy or plan.held:
        return plan
    waiting = False
    for batch in batches.in_states(conn, job_id, (BatchState.ACTIVE,)):
        if batches.open_work(conn, job_id, batch.index):
            waiting = True  # only failures waiting for their retry are left
            due = batches.next_retry_at(conn, job_id, batch.index)
            if due is not None:
                plan.next_retry_at = min(plan.next_retry_at or due, due)
            continue
        plan.verifying.append(batches.move(conn, batch, BatchState.VERIFYING))
    if waiting or plan.verifying:
        return plan
    upcoming = batches.in_states(conn, job_id, (BatchState.PLANNED,))
    if not upcoming:
        _finish_job(conn, job)
    elif _proceed(conn, job, upcoming[0]):
        # Its files are claimed by the next pass, at once: a batch boundary costs no poll.
        plan.next_retry_at = now_ms()
    return plan


def _show_hold(conn: apsw.Connection, job: jobs.JobRow, held: str | None) -> None:
    """The job's message says why it waits for space, and stops saying it once it goes on."""
    if held and job.message != held:
        jobs.set_message(conn, job, held)
    elif not held and job.message.startswith((WAITING_FOR_SPACE, WAITING_FOR_MEMORY)):
        jobs.set_message(conn, job, "")


def _claim_what_is_there(
    conn: apsw.Connection, job: jobs.JobRow, free: int, budget: int
) -> list[files.FileRow]:
    """Held for room: files a crash or a pause interrupted may still go on.

    They already hold their bytes on the disk (a partial, or the file itself renamed before
    its `done` was committed) and need only the rest; without this a nearly full disk would
    hold back forever the very files it holds. Looked at only when the disk holds the job
    back: a few stats, in this rare case, beside the claim.
    """
    landed = _bytes_on_disk(Path(job.dest), files.interrupted_paths(conn, job.id))
    return files.claim(conn, job.id, free, now_ms(), budget, landed) if landed else []


def _bytes_on_disk(dest: Path, paths: list[str]) -> int:
    """Bytes of each path's partial or, failing that, of the file under its name."""
    total = 0
    for path in paths:
        target = dest / path
        for candidate in (partial_path(target), target):
            with contextlib.suppress(OSError):
                total += candidate.stat().st_size
                break
    return total


def _device_and_usage(dest: Path) -> tuple[int, Usage]:
    device = os.stat(dest).st_dev
    return device, shutil.disk_usage(dest)


def _start_job(conn: apsw.Connection, job: jobs.JobRow) -> jobs.JobRow:
    """queued -> running; the first planned batch starts unless some batch is active."""
    job = jobs.start_job(conn, job)
    if not batches.in_states(conn, job.id, (BatchState.ACTIVE, BatchState.VERIFYING)):
        upcoming = batches.in_states(conn, job.id, (BatchState.PLANNED,))
        if upcoming:
            batches.activate(conn, upcoming[0], Path(job.dest))
    return job


def _proceed(conn: apsw.Connection, job: jobs.JobRow, upcoming: batches.BatchRow) -> bool:
    """After a batch: start the next one when it fits on the disk now (True), else wait for a
    swap."""
    batching = Batching.of_spec(json.loads(job.spec))
    margin = batching.margin if batching else 1.0
    fits, free = batches.fits_now(upcoming, Path(job.dest), margin)
    if fits or (batching and batching.auto_proceed):
        disk = batches.activate(conn, upcoming, Path(job.dest))
        logger.info("job {}: batch {} started on {}", job.name, upcoming.index, disk.describe())
        return True
    message = (
        f"batch {upcoming.index - 1} is complete; batch {upcoming.index} needs "
        f"{size_text(upcoming.bytes)} and {job.dest} has {size_text(free)} free: swap the disk "
        f"and run `bfctl swap {job.name}`, or free space and run `bfctl continue {job.name}`"
    )
    jobs.move_job(conn, job, JobState.AWAITING_SWAP, message=message)
    logger.info("job {} awaits a disk swap: {}", job.name, message)
    return False


def _finish_job(conn: apsw.Connection, job: jobs.JobRow) -> None:
    failed = files.FILES.failed(conn, job.id)
    if failed:
        message = f"{failed} file(s) failed; `bfctl failures {job.name}` lists them"
        jobs.move_job(conn, job, JobState.FAILED, message=message)
        jobs.log_about(job).warning("job {} failed: {}", job.name, message)
        return
    jobs.move_job(conn, job, JobState.COMPLETED, message="")
    logger.info("job {} completed", job.name)
