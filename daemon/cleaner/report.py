"""A clean job's stats.json: its zips, and the partitions of its series summed up.

Written when the job ends, under DEST/_jobs/NAME/stats.json (a directory that
Hive-style readers skip). Rows, duplicates, time range, null rates and id gaps
are summed from the partitions' own _stats.json; rows rejected are summed over
the distinct source zips (a monthly zip feeds many partitions, and counts once).
Each zip's rows in and rejected are the store's, committed with the zip's outcome.
"""

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import apsw

from bulkforge.daemon.cleaner import records
from bulkforge.daemon.durable import make_dirs, write_durably
from bulkforge.daemon.jobs import JobRow

JOBS_DIR = "_jobs"
STATS_FILE = "stats.json"
# A partition's stats file (partition.py writes it; not imported here: it needs pyarrow).
PARTITION_STATS_FILE = "_stats.json"


@dataclass
class Summary:
    job: str
    zips_done: int
    failed: int
    outside: int
    first_outside: str
    filtered: int
    series: list[str]
    zips: list[dict]
    partitions: int = 0
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    rows_rejected: dict[str, int] = field(default_factory=dict)
    time_min: str | None = None
    time_max: str | None = None
    null_rate: dict[str, float] = field(default_factory=dict)
    missing_ids: int = 0
    largest_id_gap: int = 0
    # The version that wrote the partitions (read without importing it into bfd).
    pyarrow: str = field(default_factory=lambda: version("pyarrow"))

    def notes(self) -> list[str]:
        """What an operator should know of the input besides the failures."""
        notes = []
        if not self.zips:
            notes.append("no zip of the layout (and of the kinds and markets asked for) found")
        if self.outside:
            notes.append(
                f"{self.outside:,} zip(s) outside the Binance layout left alone "
                f"(first: {self.first_outside})"
            )
        if self.filtered:
            notes.append(f"{self.filtered:,} zip(s) left out by the kinds/markets filters")
        return notes


def gather(conn: apsw.Connection, job: JobRow) -> Summary:
    """What the store knows of the job: its zips and what its input scan left aside."""
    zips = records.job_zips(conn, job.id)
    scanned = records.inputs(conn, job.id)
    return Summary(
        job=job.name,
        zips_done=sum(1 for z in zips if z[2] == "done"),
        failed=sum(1 for z in zips if z[2] == "failed"),
        outside=scanned.outside,
        first_outside=scanned.first_outside,
        filtered=scanned.filtered,
        series=sorted({z[1] for z in zips}),
        zips=[
            {"path": path, "state": state, "sha256": sha256, "rows_in": rows, "rejected": rejected}
            for path, _, state, sha256, rows, rejected in zips
        ],
    )


def path_of(dest: Path, name: str) -> Path:
    return dest / JOBS_DIR / name / STATS_FILE


def write(dest: Path, summary: Summary) -> None:
    """Sum up the partitions of the job's series under dest, and write the job's stats."""
    _sum_partitions(dest, summary)
    target = path_of(dest, summary.job)
    make_dirs(target.parent, dest)
    document = json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n"
    write_durably(target, document.encode())


def _sum_partitions(dest: Path, summary: Summary) -> None:
    rejected: Counter = Counter()
    sources: set[tuple[str, str]] = set()
    nulls: Counter = Counter()
    times: list[str] = []
    for series in summary.series:
        for stats_file in sorted((dest / series).glob(f"date=*/{PARTITION_STATS_FILE}")):
            stats = json.loads(stats_file.read_bytes())
            summary.partitions += 1
            summary.rows_in += stats["rows_in"]
            summary.rows_out += stats["rows_out"]
            summary.duplicates += stats["duplicates"]
            summary.missing_ids += stats["missing_ids"] or 0
            summary.largest_id_gap = max(summary.largest_id_gap, stats["largest_id_gap"] or 0)
            times += [t for t in (stats["time_min"], stats["time_max"]) if t]
            for name, rate in stats["null_rate"].items():
                nulls[name] += rate * stats["rows_out"]
            for source in stats["sources"]:
                if (source["path"], source["sha256"]) not in sources:
                    sources.add((source["path"], source["sha256"]))
                    rejected.update(source["rejected"] or {})
    summary.rows_rejected = dict(sorted(rejected.items()))
    summary.time_min, summary.time_max = (min(times), max(times)) if times else (None, None)
    rows = summary.rows_out
    summary.null_rate = {name: (n / rows if rows else 0.0) for name, n in sorted(nulls.items())}
