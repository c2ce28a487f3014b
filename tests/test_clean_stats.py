"""A clean job's statistics and its output as readers see it.

- Each zip's counts (rows in, rejected) are committed with its outcome, so a job
  killed -9 again and again ends with the same stats.json as an undisturbed run.
- The output is a Hive dataset that pyarrow, pandas and DuckDB read with no options:
  no sidecar sits inside it under a name they would try to read.
"""

import json
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import Daemon, gone, wait_until

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from tests.binance_data import trade_lines, trades, trades_path, write_trades_zip, write_zip

DAY = date(2024, 3, 1)
ENDED = {"completed", "failed"}


def job_stats(dest: Path, name: str) -> dict:
    return json.loads((dest / "_jobs" / name / "stats.json").read_text())


def clean(daemon: Daemon, name: str, root: Path, dest: Path) -> pb.Job:
    submitted = daemon.bfctl("submit", "clean", name, "--input", str(root), "--dest", str(dest))
    assert submitted.returncode == 0, submitted.stderr
    return daemon.wait_state(name, ENDED, timeout=300)


def with_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


def write_series_with_rejects(root: Path, symbols: int, days: int) -> None:
    """Per symbol: days of large daily zips, then a small one with two bad rows."""
    for n in range(symbols):
        symbol = f"S{n:02d}USDT"
        for d in range(days):
            day = DAY + timedelta(days=d)
            write_trades_zip(root, "um", symbol, day, 1 + d * 60_000, 60_000, seed=n * 31 + d)
        day = DAY + timedelta(days=days)
        lines = trade_lines(trades(day, 1 + days * 60_000, 50, seed=n), "um")
        lines[3] = with_field(lines[3], 1, "abc")  # not a number
        lines[7] = with_field(lines[7], 2, "")  # an empty field
        lines[9] = lines[9] + ",1"  # a column too many
        write_zip(root, trades_path("um", symbol, day), lines)


@pytest.mark.slow
def test_a_clean_job_killed_9_again_and_again_ends_with_the_stats_of_an_undisturbed_run(
    make_daemon, tmp_path: Path
) -> None:
    root, dest = tmp_path / "in", tmp_path / "out"
    write_series_with_rejects(root, symbols=12, days=3)
    daemon = make_daemon("--cpu-workers", "1").start()
    submitted = daemon.bfctl("submit", "clean", "k", "--input", str(root), "--dest", str(dest))
    assert submitted.returncode == 0, submitted.stderr
    kills = 0
    for _ in range(5):
        seen = len(list(dest.glob("market=*/**/data.parquet")))
        deadline = time.monotonic() + 120
        # Killed once more partitions are on disk: mid-series or just after one, unrecorded.
        while len(list(dest.glob("market=*/**/data.parquet"))) <= seen:
            job = daemon.stub.Status(pb.JobRef(name="k"), timeout=10)
            if job.state in ENDED:
                break
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.02)
        else:
            workers = daemon.workers()
            daemon.kill9()
            kills += 1
            wait_until(lambda w=workers: all(map(gone, w)), what="orphaned workers to end")
            daemon.start()
            continue
        break
    assert kills >= 3, f"the job ended after {kills} kill(s): too fast to test"
    assert daemon.wait_state("k", ENDED, timeout=300).state == "completed"

    reference = make_daemon("--cpu-workers", "1").start()
    assert clean(reference, "ref", root, tmp_path / "ref").state == "completed"
    killed, undisturbed = job_stats(dest, "k"), job_stats(tmp_path / "ref", "ref")
    assert len(killed["zips"]) == 12 * 4
    for z in killed["zips"]:
        assert z["rows_in"] is not None and z["rejected"] is not None, z
    assert sum(z["rejected"] for z in killed["zips"]) == 12 * 3
    assert {**killed, "job": "ref"} == undisturbed
    for running in (daemon, reference):
        assert running.stop() == 0, running.log_tail()


def test_the_output_is_read_by_pyarrow_pandas_and_duckdb_with_no_options(
    daemon: Daemon, tmp_path: Path
) -> None:
    root, dest = tmp_path / "in", tmp_path / "out"
    expected = 0
    for n, symbol in enumerate(("AAAUSDT", "BBBUSDT")):
        for d in range(2):
            day = DAY + timedelta(days=d)
            rows = trades(day, 1 + d * 1000, 200 + n, seed=n * 2 + d)
            write_zip(root, trades_path("um", symbol, day), trade_lines(rows, "um"))
            expected += len(rows)
    # Where an older bfd kept a partition's stats: inside the dataset, under a readable name.
    legacy = dest / "market=um/kind=trades/symbol=AAAUSDT/date=2024-03-01/stats.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("{}")
    assert clean(daemon, "readers", root, dest).state == "completed"
    assert not legacy.exists()
    assert (dest / "_jobs/readers/stats.json").is_file()  # the job's own, outside the dataset
    names = {p.name for p in dest.rglob("*") if p.is_file() and "_jobs" not in p.parts}
    assert names == {"data.parquet", "_stats.json"}

    table = ds.dataset(dest, partitioning="hive").to_table()
    assert table.num_rows == expected
    assert {"market", "kind", "symbol", "date", "id", "price"} <= set(table.column_names)
    frame = pd.read_parquet(dest)
    assert len(frame) == expected and set(frame["symbol"].astype(str)) == {"AAAUSDT", "BBBUSDT"}
    counted = duckdb.sql(
        f"SELECT count(*), count(DISTINCT symbol) FROM read_parquet('{dest}/**/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()
    assert counted == [(expected, 2)]
