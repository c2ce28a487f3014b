"""One output partition (a series' rows of one UTC day) from every zip that feeds it.

A partition is a pure function of its input zips: their rows on that day, one per
natural key (the first in a fixed order of all columns, so which copy of a doubled
row is kept does not depend on the order the zips were read), sorted by time then
key, written with fixed options. The same inputs always give the same bytes.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bulkforge.daemon.cleaner.schema import TIME, Table
from bulkforge.daemon.durable import fsync_or_die, make_dirs, replace_durably, write_durably

DATA_FILE = "data.parquet"
STATS_FILE = "stats.json"
# Fixed writer options: part of what makes a partition's bytes a function of its rows.
WRITE_OPTIONS = {
    "compression": "zstd",
    # pyarrow's default level: level 3 wrote 5% smaller files in 45% more time.
    "compression_level": 1,
    "row_group_size": 1 << 20,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
}


@dataclass
class PartitionStats:
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
    pyarrow: str = pa.__version__


def partition_dir(root: Path, series: tuple, day: date) -> Path:
    """root/market=…/kind=…/symbol=…/[interval=…/]date=YYYY-MM-DD (Hive style)."""
    market, kind, symbol, interval = series
    path = root / f"market={market}" / f"kind={kind}" / f"symbol={symbol}"
    if interval is not None:
        path = path / f"interval={interval}"
    return path / f"date={day.isoformat()}"


def build(parts: list[pa.Table], table: Table, day: date) -> tuple[pa.Table, PartitionStats]:
    """The partition's rows from its inputs' rows, and their stats (sources left empty)."""
    rows = pa.concat_tables(parts) if parts else table.schema.empty_table()
    rows = rows.filter(_on_day(rows[table.time], day))
    rows_in = rows.num_rows
    rows = _first_of_each_key(rows, table)
    rows = rows.take(pc.sort_indices(rows, [(table.time, "ascending"), (table.key, "ascending")]))
    return rows, _stats(rows, table, rows_in)


def write(directory: Path, root: Path, rows: pa.Table, stats: PartitionStats) -> None:
    """The partition's data and stats, each under a temp name, fsynced and renamed."""
    make_dirs(directory, root)
    temporary = directory / f".{DATA_FILE}.tmp"
    pq.write_table(rows, temporary, **WRITE_OPTIONS)
    replace_durably(temporary, directory / DATA_FILE)
    document = json.dumps(asdict(stats), indent=2, sort_keys=True) + "\n"
    write_durably(directory / STATS_FILE, document.encode())
    fsync_or_die(directory)


def _on_day(times: pa.ChunkedArray, day: date) -> pa.ChunkedArray:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    bounds = [pa.scalar(moment, type=TIME) for moment in (start, start + timedelta(days=1))]
    return pc.and_(pc.greater_equal(times, bounds[0]), pc.less(times, bounds[1]))


def _first_of_each_key(rows: pa.Table, table: Table) -> pa.Table:
    """One row per key: of copies, the first when every column orders them (input order aside).

    Only rows whose key repeats are sorted by all their columns; the output's order
    is set afterwards by (time, key), which the unique keys make total.
    """
    if not rows.num_rows:
        return rows
    keys = rows[table.key].cast(pa.int64()).to_numpy()
    ordered = np.sort(keys)
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


def _stats(rows: pa.Table, table: Table, rows_in: int) -> PartitionStats:
    times = rows[table.time]
    null_rate = {
        name: (rows[name].null_count / rows.num_rows if rows.num_rows else 0.0)
        for name in rows.column_names
    }
    missing = largest = None
    if table.schema.field(table.key).type != TIME and rows.num_rows:
        ids = np.sort(rows[table.key].to_numpy())
        steps = np.diff(ids)
        missing = int(ids[-1] - ids[0] + 1 - len(ids))
        largest = int(steps.max() - 1) if len(steps) else 0
    return PartitionStats(
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
