"""The clean kind behind the seam: Binance zips into partitioned, deduplicated Parquet."""

import asyncio
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import apsw
from loguru import logger

from bulkforge.daemon import jobs
from bulkforge.daemon.cleaner import machine as zip_machine
from bulkforge.daemon.cleaner import records, report
from bulkforge.daemon.cleaner.machine import ZipState
from bulkforge.daemon.cleaner.request import CleanRequest, SubmitClean
from bulkforge.daemon.cleaner.runner import Cleaner, Source
from bulkforge.daemon.cleaner.scan import Scan, scan_directory, scan_files
from bulkforge.daemon.disks import Places, dest_for
from bulkforge.daemon.errors import FailedPrecondition, InvalidArgument, NotFound
from bulkforge.daemon.exports import Exported
from bulkforge.daemon.machines.job import TERMINAL
from bulkforge.daemon.outputs import refuse_export_into
from bulkforge.daemon.pipeline import ItemExport, ItemRows, JobKind, Rerun, Services, VerifiedFiles
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

# partition.DATA_FILE, named here so bfd need not import pyarrow to remove a job.
PARTITION_DATA = "data.parquet"


class CleanKind(ItemRows, JobKind, Rerun, ItemExport):
    name = records.KIND
    item_table = records.ITEMS
    in_flight = "zip(s) were being cleaned"
    batch_unit = ""
    item_unit = "zips"
    failure_steps = ("open", "parse", "schema", "write")
    item_machine = zip_machine.MACHINE

    def __init__(self, services: Services):
        super().__init__(services)
        self._cleaner = Cleaner(services, self._scan, self._reopen_followers)
        # Clean job id -> what its download's verified files looked like when last compared.
        self._looked: dict[int, int] = {}

    @property
    def runner(self) -> Cleaner:
        return self._cleaner

    def parse(self, name: str, spec: pb.CleanSpec) -> CleanRequest:
        return SubmitClean.of(name, spec).request()

    async def create(self, request: CleanRequest, spec: dict) -> tuple[jobs.JobRow, bool]:
        """Check the input is there; its zips are registered when the job starts."""
        if request.input is not None:
            await asyncio.to_thread(_check_directory, request)
        else:
            await self.readers.call(lambda conn: self._download(conn, request.after or ""))
        return await self.writer.call(
            lambda conn: records.create_job(conn, request.name, spec, str(request.dest))
        )

    def output_of(self, conn: apsw.Connection, job: jobs.JobRow) -> Iterator[str]:
        """The partitions its zips feed (data and stats, an older bfd's stats.json too; a
        killed write's temporary name is left to the next build), and its own
        _jobs/NAME/stats.json. A partition another clean job over this dest also feeds is
        that job's too, and stays: its zips are done, nothing would build it again."""
        yield str(report.path_of(Path(""), job.name))
        others = [
            other_id
            for (other_id,) in conn.execute(
                "SELECT id FROM jobs WHERE dest = ? AND id != ? AND kind = ?",
                (job.dest, job.id, job.kind),
            )
        ]
        for series, first, last in conn.execute(
            "SELECT DISTINCT series, first_day, last_day FROM clean_zips WHERE job_id = ?",
            (job.id,),
        ):
            day, end = date.fromisoformat(first), date.fromisoformat(last)
            while day <= end:
                if not _fed_by_others(conn, others, series, day.isoformat()):
                    directory = f"{series}/date={day.isoformat()}"
                    for name in (PARTITION_DATA, report.PARTITION_STATS_FILE, report.STATS_FILE):
                        yield f"{directory}/{name}"
                day += timedelta(days=1)

    def reads(self, job: jobs.JobRow) -> str | None:
        return CleanRequest.of_spec(job.name, json.loads(job.spec)).after

    def _download(self, conn: apsw.Connection, name: str) -> tuple[jobs.JobRow, VerifiedFiles]:
        """The job --after names, and its kind as the capability that lists verified files."""
        assert self.kinds is not None
        job = jobs.get_job(conn, name)
        return job, self.kinds.capable(VerifiedFiles, job, "clean after")

    async def _scan(
        self, job: jobs.JobRow, request: CleanRequest, whole: bool
    ) -> tuple[Source, Scan]:
        """The job's zips as they are now: all of them (whole), or a download's newly verified."""
        if request.input is not None:
            source = Source(str(request.input), None)
            if not whole:
                return source, Scan()
            return source, await asyncio.to_thread(scan_directory, request.input, request.wants)

        def verified(conn: apsw.Connection):
            download, kind = self._download(conn, request.after or "")
            after = 0 if whole else records.inputs(conn, job.id).seen_file_id
            return download, kind.verified_files(conn, download, after)

        # The download's state is read before its files: once it has ended, nothing is missed.
        download, (found, frontier) = await self.readers.call(verified)
        scan = await asyncio.to_thread(scan_files, found, request.wants)
        scan.seen_file_id = frontier
        return Source(download.dest, download), scan

    async def _reopen_followers(self) -> list[str]:
        """Ended clean jobs whose download has changed since: queued again; their names.

        A download retried or resumed after the clean job following it ended (live
        again, or with verified zips the clean job has not registered as they are now)
        reopens it, as `bfctl resume` would: it cleans what changed, and ends again
        once its download has.
        """
        reopened = []
        ended = await self.readers.call(records.ended_followers)
        ids = {job.id for job in ended}  # nothing remembered outlives its job's row
        self._looked = {job_id: seen for job_id, seen in self._looked.items() if job_id in ids}
        for job in ended:
            request = CleanRequest.of_spec(job.name, json.loads(job.spec))
            looked = await self.readers.call(lambda conn, j=job, r=request: self._look(conn, j, r))
            if looked is None:
                continue
            download, found = looked
            signature = hash((download.state, tuple(found)))
            if self._looked.get(job.id) == signature:
                continue  # nothing new since the last look: no file is looked at again
            self._looked[job.id] = signature
            scan = await asyncio.to_thread(scan_files, found, request.wants)
            changed = await self.readers.call(
                lambda conn, j=job, s=scan: records.unregistered(conn, j.id, s)
            )
            if download.state in TERMINAL and not changed:
                continue
            why = f"download {download.name!r} changed after this job ended: cleaning again"
            moved = await self.writer.call(
                lambda conn, j=job, w=why: records.reopen(conn, j.id, j.state, w)
            )
            if moved is not None:
                logger.info("job {}: {} ({} zip(s) new or changed)", job.name, why, changed)
                reopened.append(job.name)
        return reopened

    def _look(self, conn: apsw.Connection, job: jobs.JobRow, request: CleanRequest):
        """(the download, its verified files past what the clean job has settled), or None
        when the download is gone (removed) or is no download."""
        try:
            download, kind = self._download(conn, request.after or "")
        except (NotFound, FailedPrecondition):
            return None
        seen = records.inputs(conn, job.id).seen_file_id
        return download, kind.verified_files(conn, download, seen)[0]

    def fill_view(self, conn: apsw.Connection, view: jobs.JobView) -> None:
        for state, (zips, size) in records.ITEMS.counts(conn, view.job.id).items():
            view.counts[state] = zips
            view.items_total += zips
            view.bytes_total += size
            if state == ZipState.DONE:
                view.bytes_done = size
        view.bytes_total_known = True  # each zip's size is known once it is registered

    async def export(self, job: jobs.JobRow, given: str) -> Exported:
        from bulkforge.daemon.cleaner import export  # pyarrow: loaded by the first export

        refuse_export_into(given, job.dest)
        async with dest_for(given, Places.of(self.services.settings)) as dest:
            # One read transaction: both files describe the same moment.
            return await self.readers.call(
                lambda conn: export.write(conn, jobs.get_job(conn, job.name), dest)
            )


def _check_directory(request: CleanRequest) -> None:
    if request.input is None or not request.input.is_dir():
        raise InvalidArgument(f"input {request.input}: not a directory bfd can read")


def _fed_by_others(conn: apsw.Connection, others: list[int], series: str, day: str) -> bool:
    """Whether a zip of one of the other jobs feeds the partition (series, day)."""
    return any(
        conn.execute(
            "SELECT 1 FROM clean_zips WHERE job_id = ? AND series = ? "
            "AND first_day <= ? AND last_day >= ? LIMIT 1",
            (other, series, day, day),
        ).fetchone()
        for other in others
    )
