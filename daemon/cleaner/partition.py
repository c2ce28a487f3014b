"""One output partition (a series' rows of one UTC day) from every zip that feeds it.

A partition is a pure function of its input zips: their rows on that day, one per
natural key (the first in a fixed order of all columns, so which copy of a doubled
row is kept does not depend on the order the zips were read), sorted by time then
key, written with fixed options. The same inputs always give the same bytes.
"""

import contextlib
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bulkforge.daemon.cleaner.schema import TIME, Table
from bulkforge.daemon.durable import (
    disk_errors,
    fsync_or_die,
    make_dirs,
    replace_durably,
    write_durably,
)

DATA_FILE = "data.parquet"
DAY_US = 86_400 * 10**6
EPOCH = date(1970, 1, 1)
# Underscored: Hive-style readers (pyarrow, pandas, Spark) skip `_` and `.` names in a dataset.
STATS_FILE = "_stats.json"
# Where older versions kept it, inside the dataset under a name readers try to read: removed.
LEGACY_STATS_FILE = "stats.json"
# Fixed writer options: part of what makes a partition's bytes a function of its rows.
WRITE_OPTIONS = {
    "compression": "zstd",
    # pyarrow's default level: level 3 wrote 5% smaller files in 45% more time.
    "compression_level": 1,
    # Plain encoding under zstd: on 200k trades dictionaries made the write 2.8x slower
    # and the file 34% larger (ids, times and prices are mostly distinct within a page).
    "use_dictionary": False,
    "row_group_size": 1 << 20,
    "write_statistics": True,
    "version": "2.6",
}


@dataclass
class PartitionStats:
    # sha256 of the sources' names and sha256s: equal digests, equal bytes.
    digest: str
    rows_in: int
    rows_out: int
    duplicates: int
    time_min: str | None
    time_max: str | None
    null_rate: dict[str, float]
    # Missing ids between the smallest and the largest (trades and aggTrades), and the
    # largest run of them; None for klines, whose key is a time.
    missing_ids: int | None
    largest_id_gap: int | None
    sources: list[dict] = field(default_factory=list)
    # Rows the day's own daily zip rejected, by reason.
    rows_rejected: dict[str, int] = field(default_factory=dict)
    pyarrow: str = pa.__version__


def partition_dir(root: Path, series: str, day: date) -> Path:
    """root/SERIES/date=YYYY-MM-DD, SERIES being market=…/kind=…/symbol=…[/interval=…]."""
    return root / series / f"date={day.isoformat()}"


def split_by_day(rows: pa.Table, table: Table) -> dict[date, pa.Table]:
    """A zip's rows by the UTC day of their time: most zips' rows are all of one day."""
    if not rows.num_rows:
        return {}
    days = rows[table.time].cast(pa.int64()).to_numpy() // DAY_US
    first, last = int(days.min()), int(days.max())
    if first == last:
        return {EPOCH + timedelta(days=first): rows}
    order = np.argsort(days, kind="stable")
    ordered = rows.take(pa.array(order))
    bounds = np.searchsorted(days[order], np.arange(first, last + 2))
    return {
        EPOCH + timedelta(days=first + n): ordered.slice(start, stop - start)
        for n, (start, stop) in enumerate(itertools.pairwise(bounds))
        if stop > start
    }


def build(parts: list[pa.Table], table: Table, digest: str) -> tuple[pa.Table, PartitionStats]:
    """The partition's rows from its inputs' rows of its day, and their stats (no sources)."""
    rows = pa.concat_tables(parts) if parts else table.schema.empty_table()
    rows_in = rows.num_rows
    rows = _first_of_each_key(rows, table)
    if not _in_order(rows, table):
        order = [(table.time, "ascending"), (table.key, "ascending")]
        rows = rows.take(pc.sort_indices(rows, order))
    return rows, _stats(rows, table, rows_in, digest)


def write(directory: Path, root: Path, rows: pa.Table, stats: PartitionStats) -> None:
    """The partition's data, then its stats, each under a temp name, fsynced and renamed.

    The stats go last: a crash between the two leaves stats whose digest does not
    match the sources, so the partition is rebuilt, never taken as finished.
    The temp name is the writer's own: a worker orphaned by a killed bfd may still
    be writing the same partition, with the same bytes.
    """
    make_dirs(directory, root)
    temporary = directory / f".{DATA_FILE}.{os.getpid()}.tmp"
    with disk_errors(temporary):  # a failed disk holds the job: it fails no zip
        for stale in directory.glob(f".{DATA_FILE}.*.tmp"):  # a worker killed mid-write's
            stale.unlink(missing_ok=True)
        pq.write_table(rows, temporary, **WRITE_OPTIONS)
    replace_durably(temporary, directory / DATA_FILE)
    document = json.dumps(asdict(stats), indent=2, sort_keys=True) + "\n"
    write_durably(directory / STATS_FILE, document.encode())
    with contextlib.suppress(FileNotFoundError):
        (directory / LEGACY_STATS_FILE).unlink()
    fsync_or_die(directory)


def remove(directory: Path) -> None:
    """A partition none of whose sources has a row on its day any more: stats first, then data."""
    removed = False
    for name in (STATS_FILE, LEGACY_STATS_FILE, DATA_FILE):
        with contextlib.suppress(FileNotFoundError), disk_errors(directory / name):
            (directory / name).unlink()
            removed = True
    if removed:
        fsync_or_die(directory)


def recorded_digest(directory: Path) -> str | None:
    """The digest in a partition's stats on disk; None when it has none or it is unreadable."""
    return recorded_stats(directory).get("digest")


def recorded_stats(directory: Path) -> dict:
    """A partition's stats on disk; {} when there are none or they are unreadable."""
    try:
        stats = json.loads((directory / STATS_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def _first_of_each_key(rows: pa.Table, table: Table) -> pa.Table:
    """One row per key: of copies, the first when every column orders them (input order aside).

    Only rows whose key repeats are sorted by all their columns; the output's order
    is set afterwards by (time, key), which the unique keys make total.
    """
    if not rows.num_rows:
        return rows
    keys = _int64(rows[table.key])
    ordered = _sorted(keys)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not len(repeated):
        return rows
    in_group = np.isin(keys, repeated)
    copies = rows.filter(pa.array(in_group))
    order = [(table.key, "ascending")]
    order += [(name, "ascending") for name in rows.column_names if name != table.key]
    copies = copies.take(pc.sort_indices(copies, order))
    copy_keys = copies[table.key].cast(pa.int64()).to_numpy()
    first = np.ones(len(copy_keys), dtype=bool)
    first[1:] = copy_keys[1:] != copy_keys[:-1]
    return pa.concat_tables([rows.filter(pa.array(~in_group)), copies.filter(pa.array(first))])


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy()


def _sorted(values: np.ndarray) -> np.ndarray:
    """values in order: as they are when they already are (Binance's files mostly are)."""
    return values if _ascending(values) else np.sort(values)


def _ascending(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def _in_order(rows: pa.Table, table: Table) -> bool:
    """Whether the rows are already by (time, key): a check costs far less than a sort."""
    times, keys = _int64(rows[table.time]), _int64(rows[table.key])
    later = times[1:] > times[:-1]
    tied = (times[1:] == times[:-1]) & (keys[1:] > keys[:-1])
    return bool(np.all(later | tied))


def _stats(rows: pa.Table, table: Table, rows_in: int, digest: str) -> PartitionStats:
    times = rows[table.time]
    null_rate = {
        name: (rows[name].null_count / rows.num_rows if rows.num_rows else 0.0)
        for name in rows.column_names
    }
    missing = largest = None
    if table.schema.field(table.key).type != TIME and rows.num_rows:
        ids = _sorted(_int64(rows[table.key]))
        steps = np.diff(ids)
        missing = int(ids[-1] - ids[0] + 1 - len(ids))
        largest = int(steps.max() - 1) if len(steps) else 0
    return PartitionStats(
        digest=digest,
        rows_in=rows_in,
        rows_out=rows.num_rows,
        duplicates=rows_in - rows.num_rows,
        time_min=_iso(pc.min(times).as_py()) if rows.num_rows else None,
        time_max=_iso(pc.max(times).as_py()) if rows.num_rows else None,
        null_rate={k: (0.0 if math.isnan(v) else v) for k, v in null_rate.items()},
        missing_ids=missing,
        largest_id_gap=largest,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
