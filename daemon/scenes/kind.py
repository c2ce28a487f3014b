"""The scenes kind behind the seam: millions of items through steps into shards.

The modules that touch Arrow (items, shards, export) are imported when a job first
needs them, so an idle bfd does not carry pyarrow.
"""

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.disks import Places, dest_for
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.exports import Exported
from bulkforge.daemon.failures import FailureGroupRow, FailureReport
from bulkforge.daemon.outputs import refuse_export_into
from bulkforge.daemon.pipeline import ItemExport, ItemRows, JobKind, NumberedOutput, Services
from bulkforge.daemon.scenes import machine as scene_machine
from bulkforge.daemon.scenes import records
from bulkforge.daemon.scenes.machine import SceneState
from bulkforge.daemon.scenes.pipeline import Scenes
from bulkforge.daemon.scenes.request import ScenesRequest, SubmitScenes
from bulkforge.daemon.scenes.shards import LEGACY_STATS_SUFFIX, STATS_DIR, safe_name
from bulkforge.daemon.scenes.steps import load_steps
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

if TYPE_CHECKING:
    from bulkforge.daemon.scenes.items import ItemChunk


# A shard's names in its dest: NNNNN/ (files), NNNNN.tar, NNNNN.parquet, and its stats
# _stats/NNNNN.json (an older bfd's NNNNN_stats.json too).
SHARD_NAME = re.compile(r"(\d{5,})(?:\.tar|\.parquet|_stats\.json)?")
SHARD_SUFFIXES = {
    "files": ("", ".parquet", LEGACY_STATS_SUFFIX),
    "webdataset": (".tar", ".parquet", LEGACY_STATS_SUFFIX),
    "parquet": (".parquet", LEGACY_STATS_SUFFIX),
}


class ScenesKind(ItemRows, JobKind, ItemExport, NumberedOutput):
    name = records.KIND
    output_unit = "shards"
    item_table = records.ITEMS
    in_flight = "item(s) were running"
    batch_unit = "shard"
    item_unit = "items"
    # register: input rows refused at registration, one group of failures (not items)
    failure_steps = ("register", "connect", "transfer", "fetch", "verify", "decode", "internal")
    item_machine = scene_machine.MACHINE

    def __init__(self, services: Services):
        super().__init__(services)
        self._scenes = Scenes(services)

    @property
    def runner(self) -> Scenes:
        return self._scenes

    def parse(self, name: str, spec: pb.ScenesSpec) -> ScenesRequest:
        return SubmitScenes.of(name, spec).request()

    def steps_of(self, job: jobs.JobRow) -> tuple[str, ...]:
        """The built-in steps and the job's own (a plug-in fails its items as MODULE:FUNCTION)."""
        own = json.loads(job.spec).get("steps") or []
        return tuple(dict.fromkeys((*self.failure_steps, *own)))

    async def create(self, request: ScenesRequest, spec: dict) -> tuple[jobs.JobRow, bool]:
        """Check the steps and the input's first chunk; the job starts with that chunk."""
        # Plug-ins are imported now: one that does not import refuses the job, not its items.
        offered = self.services.settings.plugin_steps
        await asyncio.to_thread(load_steps, list(request.steps), offered)
        rows_total, first = await asyncio.to_thread(_first_chunk, request)
        return await self.writer.call(
            lambda c: records.create_job(
                c, request.name, spec, str(request.dest), rows_total, first
            )
        )

    def numbered_output(self, dest: Path) -> int:
        """Shards in dest, by their names (NNNNN, NNNNN.tar, …; one count per number)."""
        with os.scandir(dest) as entries:
            return len({m[1] for e in entries if (m := SHARD_NAME.fullmatch(e.name))})

    def output_of(self, conn: apsw.Connection, job: jobs.JobRow) -> Iterator[str]:
        """Each shard the job began (its batch rows): its files and their temporary names.
        A `files` shard's folder goes by its items' files (`<key>.<ext>`, `<key>.json`):
        what else someone put in it stays, and so does the folder then."""
        fmt = json.loads(job.spec).get("format")
        for (index,) in conn.execute(
            "SELECT idx FROM batches WHERE job_id = ? ORDER BY idx", (job.id,)
        ):
            for suffix in SHARD_SUFFIXES.get(fmt, ()):
                if suffix or fmt != "files":
                    yield f"{index:05d}{suffix}"
                yield f".{index:05d}{suffix}.tmp"  # a temporary folder is wholly the job's
            yield f"{STATS_DIR}/{index:05d}.json"
            yield f"{STATS_DIR}/.{index:05d}.json.tmp"
            if fmt == "files":
                yield from _items_in_folder(conn, job, f"{index:05d}", index)

    def fill_view(self, conn: apsw.Connection, view: jobs.JobView) -> None:
        """Items by state; the total counts rows not yet registered, minus those skipped."""
        for state, (items, size) in records.ITEMS.counts(conn, view.job.id).items():
            view.counts[state] = items
            if state == SceneState.DONE:
                view.bytes_done = view.bytes_total = size
        view.registration = records.registration(conn, view.job.id)
        if view.registration is not None:
            view.items_total = view.registration.rows_total - view.registration.rejected

    def failures(
        self, conn: apsw.Connection, job: jobs.JobRow, step: str, limit: int
    ) -> FailureReport:
        """Failed items by step and class; input rows skipped at registration are one more group."""
        report = super().failures(conn, job, step, limit)
        progress = records.registration(conn, job.id)
        if progress is not None and progress.rejected and step in ("", "register"):
            rejected = FailureGroupRow(
                "register", "rejected_row", progress.rejected, progress.first_rejected
            )
            report.groups.append(rejected)
            report.total += rejected.count
        return report

    async def export(self, job: jobs.JobRow, given: str) -> Exported:
        from bulkforge.daemon.scenes import export

        refuse_export_into(given, job.dest)
        async with dest_for(given, Places.of(self.services.settings)) as dest:
            # One read transaction: the three files describe the same moment.
            return await self.readers.call(
                lambda conn: export.write(conn, jobs.get_job(conn, job.name), dest)
            )


def _first_chunk(request: ScenesRequest) -> "tuple[int, ItemChunk | None]":
    """Check the input and read its first chunk: what is wrong there refuses the job."""
    from pyarrow import ArrowException

    from bulkforge.daemon.scenes.items import Input

    source = Input(request.input, request.columns)
    if not source.rows_total:
        raise InvalidArgument(f"input {request.input}: there are no rows to process")
    try:
        first = next(source.chunks(), None)
    except (OSError, ArrowException, UnicodeDecodeError) as exc:  # a damaged page, bad UTF-8
        raise InvalidArgument(
            f"input {request.input}: not a readable Parquet file ({exc})"
        ) from None
    if first is None:
        return source.rows_total, None
    if first.rejected:
        raise InvalidArgument(f"input {first.rejected[0].describe()}; every row needs a key")
    seen: dict[str, int] = {}
    for key, row in zip(first.keys, first.rows, strict=True):
        if key in seen:
            raise InvalidArgument(
                f"input {first.source}: rows {seen[key]} and {row} have the same key {key!r}; "
                "keys must be unique"
            )
        seen[key] = row
    return source.rows_total, first


def _items_in_folder(
    conn: apsw.Connection, job: jobs.JobRow, folder: str, shard: int
) -> Iterator[str]:
    """The files of a `files` shard's folder that belong to its items, by their names."""
    samples = {
        safe_name(key)
        for (key,) in conn.execute(
            "SELECT key FROM scenes WHERE job_id = ? AND shard = ?", (job.id, shard)
        )
    }
    try:
        names = os.listdir(Path(job.dest) / folder)
    except OSError:
        return  # not there (never finished, or deleted before)
    yield from (f"{folder}/{name}" for name in names if name.split(".")[0] in samples)
