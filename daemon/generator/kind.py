"""The generate kind behind the seam: synthetic related tables, part by part."""

import asyncio
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import apsw

from bulkforge.daemon import jobs
from bulkforge.daemon.durable import fsync_or_die, write_durably
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.generator import machine as part_machine
from bulkforge.daemon.generator import records
from bulkforge.daemon.generator.machine import PartState
from bulkforge.daemon.generator.request import GenerateRequest, SubmitGenerate
from bulkforge.daemon.generator.runner import Generator
from bulkforge.daemon.pipeline import ItemRows, JobKind, NumberedOutput, Services
from bulkforge.daemon.store import now_ms
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import size_text

SCHEMA_FILE = "schema.sql"
# The SQL output's load script (formats.load_script writes it).
LOAD_FILE = "load.sql"
RATE_WINDOW_S = 10
# Parts of one job: each is a row in the store and a file on disk.
MAX_PARTS = 1_000_000
# A part's file in DEST/TABLE/, as formats.part_name names it (not imported: it needs pyarrow).
PART_NAME = re.compile(r"part-\d{5,}\.(?:parquet|csv|jsonl|sql)")
# What one part may be estimated to need when bfd runs without a memory cap.
UNCAPPED_PART_MEMORY = 2 * 1024**3


class GenerateKind(ItemRows, JobKind, NumberedOutput):
    name = records.KIND
    output_unit = "parts"
    item_table = records.ITEMS
    in_flight = "part(s) were being made"
    batch_unit = ""
    item_unit = "parts"
    # Rows, what a generator makes: a part holds a chunk of them.
    throughput_unit = "rows"
    failure_steps = ("write",)
    item_machine = part_machine.MACHINE

    def __init__(self, services: Services):
        super().__init__(services)
        self._generator = Generator(services)

    @property
    def runner(self) -> Generator:
        return self._generator

    def parse(self, name: str, spec: pb.GenerateSpec) -> GenerateRequest:
        return SubmitGenerate.of(name, spec).request()

    async def create(self, request: GenerateRequest, spec: dict) -> tuple[jobs.JobRow, bool]:
        """Every part of every table; for SQL, the CREATE TABLE statements written first.

        Counting a derived table's rows needs the generator itself (numpy, pyarrow): it is
        loaded here, by the first generate job, not by bfd's start.
        """
        from bulkforge.daemon.generator.columns import Dataset

        self._refuse_what_cannot_fit(request)  # before counting a derived table's seats
        dataset = await asyncio.to_thread(Dataset, request.model, request.counts(), request.seed)
        counts, order = dataset.counts, request.model.order()
        parts = sum(-(-count // request.chunk_rows) for count in counts.values())
        if parts > MAX_PARTS:
            raise InvalidArgument(
                f"{parts:,} parts of chunk_rows {request.chunk_rows:,}: at most {MAX_PARTS:,} "
                "per job; give a larger chunk_rows"
            )
        # The seam's claim_dest has refused a dest another job holds; create_job checks again
        # in the writer, where no submit can come between.
        dest = str(request.dest)
        if request.format == "sql":
            await asyncio.to_thread(_write_schema, request, dataset, order)
            await asyncio.to_thread(_write_load_script, request, counts, order)
        return await self.writer.call(
            lambda conn: records.create_job(
                conn, request.name, spec, dest, counts, order, request.chunk_rows
            )
        )

    def numbered_output(self, dest: Path) -> int:
        """Part files in dest's table directories, by their names."""
        found = 0
        with os.scandir(dest) as tables:
            for table in tables:
                if table.name[:1] in "._" or not table.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(table.path) as files:
                    found += sum(1 for f in files if PART_NAME.fullmatch(f.name))
        return found

    def output_of(self, conn: apsw.Connection, job: jobs.JobRow) -> Iterator[str]:
        """Each part's file (and its temporary name), and schema.sql and load.sql of an SQL job."""
        fmt = json.loads(job.spec).get("format", "parquet")
        for table, index in conn.execute(
            "SELECT table_name, idx FROM generate_parts WHERE job_id = ? ORDER BY id", (job.id,)
        ):
            part = f"part-{index:05d}.{fmt}"
            yield from (f"{table}/{part}", f"{table}/.{part}.tmp")
        if fmt == "sql":
            for name in (SCHEMA_FILE, LOAD_FILE):
                yield from (name, f".{name}.tmp")

    def _refuse_what_cannot_fit(self, request: GenerateRequest) -> None:
        """Checked on the spec's own tables (a derived table's rows need its index, built
        after): too many parts, a part past the per-task memory, output past the disk."""
        counts = request.counts()
        _refuse_too_many_parts(request.chunk_rows, counts)
        self._refuse_parts_over_memory(request, counts)
        _refuse_output_past_the_disk(request, counts)

    def _refuse_parts_over_memory(self, request: GenerateRequest, counts: dict[str, int]) -> None:
        """Each part must fit the memory one task may use: the memory cap shared by the CPU
        workers (each may be making a part at once), or UNCAPPED_PART_MEMORY without a cap."""
        from bulkforge.daemon.generator import widths

        governor = self.services.governor
        cap, workers = governor.memory_cap, governor.cpu_workers
        if cap:
            bound = governor.task_memory()  # what each worker's hard limit lets a task take
            why = f"the memory cap of {size_text(cap)} over {workers} CPU worker(s)"
        else:
            bound, why = UNCAPPED_PART_MEMORY, "bfd runs without a memory cap"
        try:
            widths.check_part_memory(
                request.model, counts, request.format, request.chunk_rows, bound, why
            )
        except ValueError as exc:
            raise InvalidArgument(f"chunk_rows {request.chunk_rows:,}: {exc}") from None

    def fill_view(self, conn: apsw.Connection, view: jobs.JobView) -> None:
        for state, (parts, size) in records.ITEMS.counts(conn, view.job.id).items():
            view.counts[state] = parts
            view.items_total += parts
            if state == PartState.DONE:
                view.bytes_done = view.bytes_total = size
        # Rows per second over the last RATE_WINDOW_S, or the job's life when shorter.
        now = now_ms()
        since = max(view.job.created_at, now - RATE_WINDOW_S * 1000)
        span_s = max(1e-3, (now - since) / 1000)
        view.tables = [
            jobs.TableProgress(name, done, total, parts_done, parts, recent / span_s)
            for name, done, total, parts_done, parts, recent in records.rows_by_table(
                conn, view.job.id, since
            )
        ]


def _refuse_too_many_parts(chunk_rows: int, counts: dict[str, int]) -> None:
    parts = sum(-(-count // chunk_rows) for count in counts.values())
    if parts > MAX_PARTS:
        raise InvalidArgument(
            f"{parts:,} parts of chunk_rows {chunk_rows:,}: at most {MAX_PARTS:,} "
            "per job; give a larger chunk_rows"
        )


def _refuse_output_past_the_disk(request: GenerateRequest, counts: dict[str, int]) -> None:
    """A job whose text output cannot fit its dest's whole filesystem, even at its least, is
    refused now rather than held for space it can never have."""
    from bulkforge.daemon.generator import widths

    least = widths.least_output(request.model, counts, request.format)
    place = Path(request.dest)
    while not place.exists():
        place = place.parent
    total = shutil.disk_usage(place).total
    if least > total:
        raise InvalidArgument(
            f"rows {request.rows:,} in format {request.format!r}: at least {size_text(least)} "
            f"of output (its separators and keys alone), more than the {size_text(total)} of "
            f"the filesystem holding {request.dest}"
        )


def _write_schema(request: GenerateRequest, dataset, order: list[str]) -> None:
    """DEST/schema.sql: the tables' CREATE statements, parents first, with their keys."""
    from bulkforge.daemon.generator import formats

    types = {
        table: {field.name: field.type for field in dataset.rows(table, 0, 1).schema}
        for table in order
    }
    text = formats.create_tables(request.model, order, types, request.dialect)
    path = Path(request.dest) / SCHEMA_FILE
    write_durably(path, text.encode())
    fsync_or_die(path.parent)


def _write_load_script(request: GenerateRequest, counts: dict[str, int], order: list[str]) -> None:
    """DEST/load.sql: the schema, then every part the job will write, parents first, read by
    the dialect's own client (psql -f, sqlite3 .read, mysql <) with every key enforced."""
    from bulkforge.daemon.generator import formats

    parts = [
        f"{table}/{formats.part_name(index, 'sql')}"
        for table in order
        for index in range(-(-counts[table] // request.chunk_rows))
    ]
    rows = {table: counts[table] for table in order}
    text = formats.load_script(request.dialect, SCHEMA_FILE, parts, rows)
    path = Path(request.dest) / LOAD_FILE
    write_durably(path, text.encode())
    fsync_or_die(path.parent)
