"""Cleaning one series (market, kind, symbol[, interval]) in a worker process.

The daemon hands a worker every usable zip of the series; the worker answers
what each zip turned out to be and which partitions it built. A partition is a
pure function of its source zips, so it is rebuilt only when the digest of
those sources (their names and sha256) differs from the one it was built from:
on disk in its _stats.json, or in the store for a day none of whose sources had
a row. Days are built in order and a zip is parsed once, when the first day it
feeds is built, and let go after the last; a zip feeds its own days and one on
either side (trades published a day late), so no more than a few zips are held
at a time.

Everything here runs in a worker process: it takes and returns plain data, and
never touches the store.
"""

import hashlib
import json
import os
from datetime import date
from pathlib import Path

import pyarrow as pa

from bulkforge.daemon.cleaner import partition
from bulkforge.daemon.cleaner.layout import parse_path
from bulkforge.daemon.cleaner.parse import CleanFailed, parse_zip
from bulkforge.daemon.cleaner.schema import TABLES, Table
from bulkforge.daemon.cleaner.work import SeriesResult, SeriesTask, ZipInput, ZipOutcome
from bulkforge.daemon.governor import give_back_memory
from bulkforge.proto.inputs import UnsafeInput, open_regular


def clean_series(task: SeriesTask) -> SeriesResult:
    """Bring every partition of the series up to date with its zips; what each zip turned out."""
    try:
        return _Cleaning(task).run()
    finally:
        give_back_memory()


class _Cleaning:
    def __init__(self, task: SeriesTask):
        self.task = task
        self.dest = Path(task.dest)
        # In path order: a partition's stats list its sources in a fixed order.
        self.zips = sorted(task.zips, key=lambda z: z.path)
        self.sources = {z.id: parse_path(z.path) for z in task.zips}
        first = self.sources[task.zips[0].id]
        self.table: Table = TABLES[(first.market, first.kind)]
        self.result = SeriesResult({z.id: _identify(z) for z in task.zips})
        self.parsed: dict[int, dict[date, pa.Table]] = {}

    def usable(self, zip_input: ZipInput) -> bool:
        return self.result.zips[zip_input.id].failure is None

    def feeding(self, day: date) -> list[ZipInput]:
        """The usable zips whose rows may fall on day, in path order."""
        return [z for z in self.zips if self.usable(z) and day in self.dates(z)]

    def dates(self, zip_input: ZipInput) -> list[date]:
        return self.sources[zip_input.id].dates()

    def run(self) -> SeriesResult:
        days = {day for z in self.zips if self.usable(z) for day in self.dates(z)}
        days |= {date.fromisoformat(day) for day in self.task.empty}
        stale = sorted(day for day in days if not self.up_to_date(day))
        last_use = {}
        for day in stale:
            for z in self.feeding(day):
                last_use[z.id] = day
        for day in stale:
            self.build(day)
            for zip_id in [z for z, last in last_use.items() if last == day]:
                self.parsed.pop(zip_id, None)
        self.count_the_rest()
        return self.result

    def learn_counts(self, sources: list) -> None:
        """A zip's counts from an up-to-date partition that lists it (by name and sha256).

        A zip whose partitions a killed bfd wrote but never recorded is not parsed
        again; its counts, committed with its outcome, come from what they list.
        """
        by_name = {(z.path, self.result.zips[z.id].sha256): z.id for z in self.zips}
        for source in sources:
            zip_id = by_name.get((source.get("path"), source.get("sha256")))
            outcome = self.result.zips.get(zip_id) if zip_id is not None else None
            if outcome is None or outcome.rows_in is not None:
                continue
            if isinstance(source.get("rows_in"), int) and isinstance(source.get("rejected"), dict):
                outcome.rows_in = source["rows_in"]
                outcome.rejected = dict(sorted(source["rejected"].items()))

    def count_the_rest(self) -> None:
        """Every zip this task answers for leaves with its counts: parsed for them if need be
        (one no up-to-date partition lists, such as a zip of no rows at all)."""
        for z in self.zips:
            if z.home and self.usable(z) and self.result.zips[z.id].rows_in is None:
                self.parse(z)
                self.parsed.pop(z.id, None)

    def up_to_date(self, day: date) -> bool:
        digest = self.digest(self.feeding(day))
        directory = partition.partition_dir(self.dest, self.task.series, day)
        recorded = partition.recorded_stats(directory)
        if recorded.get("digest") == digest:
            self.learn_counts(recorded.get("sources") or [])
            return True
        return (
            self.task.empty.get(day.isoformat()) == digest
            and not (directory / partition.DATA_FILE).exists()
        )

    def digest(self, zips: list[ZipInput]) -> str:
        named = [(z.path, self.result.zips[z.id].sha256) for z in zips]
        return hashlib.sha256(json.dumps(sorted(named)).encode()).hexdigest()

    def build(self, day: date) -> None:
        """One day's partition from its zips' rows of that day: written, or removed if none."""
        for z in self.feeding(day):
            if z.id not in self.parsed:
                self.parse(z)
        sources = self.feeding(day)  # without any that failed to parse just now
        digest = self.digest(sources)
        parts = [self.parsed[z.id][day] for z in sources if day in self.parsed[z.id]]
        rows, stats = partition.build(parts, self.table, digest)
        stats.sources = [self.described(z) for z in sources]
        stats.rows_rejected = self.rejected_on(day, sources)
        directory = partition.partition_dir(self.dest, self.task.series, day)
        if rows.num_rows:
            partition.write(directory, self.dest, rows, stats)
        else:
            partition.remove(directory)
        self.result.built[day.isoformat()] = (digest, rows.num_rows)
        self.result.rows_out += rows.num_rows

    def parse(self, zip_input: ZipInput) -> None:
        outcome = self.result.zips[zip_input.id]
        try:
            parsed = parse_zip(
                zip_input.file, self.table, self.task.inflate_limit, Path(zip_input.root)
            )
        except CleanFailed as failed:
            outcome.failure = (failed.step, failed.error_class, str(failed))
            return
        self.result.parsed += 1
        outcome.rows_in = parsed.rows_in
        outcome.rejected = dict(sorted(parsed.rejected.items()))
        self.parsed[zip_input.id] = partition.split_by_day(parsed.rows, self.table)

    def rejected_on(self, day: date, sources: list[ZipInput]) -> dict[str, int]:
        """Rows rejected by the day's own daily zips, by reason (a monthly zip's rejects
        belong to no one day: its entry in sources, and the job's stats, count them)."""
        rejected: dict[str, int] = {}
        for z in sources:
            source = self.sources[z.id]
            if not source.monthly and source.first == day:
                for reason, count in (self.result.zips[z.id].rejected or {}).items():
                    rejected[reason] = rejected.get(reason, 0) + count
        return dict(sorted(rejected.items()))

    def described(self, zip_input: ZipInput) -> dict:
        outcome = self.result.zips[zip_input.id]
        return {
            "path": zip_input.path,
            "sha256": outcome.sha256,
            "rows_in": outcome.rows_in,
            "rejected": outcome.rejected,
        }


def _identify(zip_input: ZipInput) -> ZipOutcome:
    """The zip's size, mtime and sha256 now: hashed again only when its size or mtime moved.

    Only a regular file inside the input root is read (a symlink out of it, a FIFO, a
    device, a socket fails the zip at `open`, its error class saying which).
    """
    try:
        with open_regular(zip_input.file, zip_input.root) as file:
            status = os.fstat(file.fileno())
            same = (status.st_size, status.st_mtime_ns) == (zip_input.size, zip_input.mtime_ns)
            sha256 = zip_input.sha256 if same and zip_input.sha256 else _sha256(file)
    except UnsafeInput as unsafe:
        return ZipOutcome(failure=("open", unsafe.reason, f"{zip_input.path}: {unsafe.why}"))
    except FileNotFoundError:
        return ZipOutcome(failure=("open", "missing", f"{zip_input.path}: no longer there"))
    except OSError as exc:
        return ZipOutcome(failure=("open", "io", f"{zip_input.path}: {exc.strerror or exc}"))
    return ZipOutcome(sha256, status.st_size, status.st_mtime_ns)


def _sha256(file) -> str:
    return hashlib.file_digest(file, "sha256").hexdigest()
