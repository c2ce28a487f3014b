"""One part of a table, made in a worker process: generated, rendered, written durably.

A part is rows [start, start + rows) of one table: a pure function of the job's
spec, rows and seed, so a part made again after a crash, by another worker or at
another time, has the same bytes. The file is written under a temp name, fsynced,
renamed and its directory fsynced before the worker answers; only then does the
daemon record the part done.
"""

import hashlib
import json
from pathlib import Path

from bulkforge.daemon.durable import disk_errors, fsync_or_die, make_dirs, write_durably
from bulkforge.daemon.generator import formats
from bulkforge.daemon.generator import spec as s
from bulkforge.daemon.generator.columns import Dataset
from bulkforge.daemon.generator.work import PartTask, PartWritten
from bulkforge.daemon.governor import give_back_memory

# Distinct values up to which a column is dictionary-encoded in Parquet.
FEW = 1 << 16
# The dataset of each job spec a worker has seen: parsed and checked once per process.
_DATASETS: dict[str, Dataset] = {}


def make_part(task: PartTask) -> PartWritten:
    stored = task.stored
    try:
        dataset = _dataset(task.job_spec)
        rows = dataset.rows(task.table, task.start, task.rows)
        few = few_values(dataset, task.table)
        data = formats.render(rows, stored["format"], task.table, stored["sql_dialect"], few)
        del rows
        dest = Path(stored["dest"])
        path = part_path(dest, task.table, task.index, stored["format"])
        with disk_errors(path):  # a failed disk holds the job: it fails no part
            make_dirs(path.parent, dest)
            write_durably(path, data)
            fsync_or_die(path.parent)
        return PartWritten(str(path), len(data), hashlib.sha256(data).hexdigest())
    finally:
        give_back_memory()


def few_values(dataset: Dataset, table: str) -> list[str]:
    """Columns of at most FEW distinct values (worth a dictionary), in the table's order."""
    found = []
    for name, column in dataset.spec.tables[table].schema_columns().items():
        distinct = column.distinct()
        for parent, _ in column.parents():
            distinct = dataset.counts[parent]
        if distinct is not None and distinct <= FEW and not column.unique:
            found.append(name)
    return found


def part_path(dest: Path, table: str, index: int, fmt: str) -> Path:
    return dest / table / formats.part_name(index, fmt)


def _dataset(job_spec: str) -> Dataset:
    if job_spec not in _DATASETS:
        stored = json.loads(job_spec)
        model = s.restored(stored["spec"], stored.get("column_order"))
        _DATASETS.clear()  # one job at a time is plenty to keep
        _DATASETS[job_spec] = Dataset(model, model.check(stored["rows"]), stored["seed"])
    return _DATASETS[job_spec]
