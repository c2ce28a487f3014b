"""A clean job's statistics and its output as readers see it.

- Each zip's counts (rows in, rejected) are committed with its outcome, so a job
  killed -9 again and again ends with the same stats.json as an undisturbed run.
- The output is a Hive dataset that pyarrow, pandas, polars and DuckDB read with no
  options (polars by the glob its users type: its directory form refuses any file that
  is not Parquet, even Spark's `_SUCCESS`): no sidecar sits inside it under a name they
  would try to read, and the rows they count are the rows bfd's stats count.
"""

import json
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest
from conftest import Daemon, gone, wait_until

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from tests.binance_data import (
    AGG_HEADER,
    KLINE_HEADER,
    day_start_ms,
    trade_lines,
    trades,
    trades_path,
    write_trades_zip,
    write_zip,
)

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


def write_every_kind(root: Path) -> None:
    """Trades of two markets, aggTrades and klines of two intervals, over two days."""
    for d in range(2):
        day = DAY + timedelta(days=d)
        start = day_start_ms(day)
        for n, (market, symbol) in enumerate((("um", "ETHUSDT"), ("spot", "BTCUSDT"))):
            rows = trades(day, 1 + d * 1000, 120 + n * 7, seed=n * 2 + d)
            write_zip(root, trades_path(market, symbol, day), trade_lines(rows, market))
        agg = [
            f"{100 + i + d * 1000},42000.5,0.25,{500 + 2 * i},{501 + 2 * i},{start + i * 1000},true"
            for i in range(30 + d)
        ]
        folder = "data/futures/um/daily/aggTrades/BTCUSDT"
        write_zip(root, f"{folder}/BTCUSDT-aggTrades-{day}.zip", agg, AGG_HEADER["um"])
        for interval, step_ms, count in (("1m", 60_000, 90), ("1h", 3_600_000, 24)):
            klines = [
                f"{start + m * step_ms},1.0,2.0,0.5,1.5,10.0,{start + (m + 1) * step_ms - 1},"
                "15.0,7,4.0,6.0,0"
                for m in range(count)
            ]
            folder = f"data/spot/daily/klines/BTCUSDT/{interval}"
            write_zip(root, f"{folder}/BTCUSDT-{interval}-{day}.zip", klines, KLINE_HEADER)


def partition_rows(folder: Path) -> int:
    """Rows out of every partition under folder, as the partitions' own stats count them."""
    return sum(json.loads(p.read_text())["rows_out"] for p in folder.rglob("_stats.json"))


def read_by_every_reader(folder: Path) -> dict[str, int]:
    """The rows each reader counts in a Hive dataset folder, called as its users call it."""
    glob = f"{folder}/**/*.parquet"
    return {
        "pyarrow.dataset": ds.dataset(folder, partitioning="hive").count_rows(),
        "pandas": len(pd.read_parquet(folder)),
        "polars read": pl.read_parquet(glob).height,
        "polars scan": pl.scan_parquet(glob).select(pl.len()).collect().item(),
        "duckdb": duckdb.sql(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchall()[0][0],
    }


def test_every_kinds_dataset_is_read_whole_by_each_reader_and_counts_bfds_rows(
    daemon: Daemon, tmp_path: Path
) -> None:
    root, dest = tmp_path / "in", tmp_path / "out"
    write_every_kind(root)
    assert clean(daemon, "kinds", root, dest).state == "completed"
    datasets = sorted(p for p in dest.glob("market=*/kind=*") if p.is_dir())
    assert [str(p.relative_to(dest)) for p in datasets] == [
        "market=spot/kind=klines",
        "market=spot/kind=trades",
        "market=um/kind=aggTrades",
        "market=um/kind=trades",
    ]
    expected = {
        "market=spot/kind=klines": 2 * (90 + 24),
        "market=spot/kind=trades": 127 * 2,
        "market=um/kind=aggTrades": 30 + 31,
        "market=um/kind=trades": 120 * 2,
    }
    for folder in datasets:
        rows = partition_rows(folder)
        assert rows == expected[str(folder.relative_to(dest))]
        counted = read_by_every_reader(folder)
        assert counted == dict.fromkeys(counted, rows), folder
    # The partition columns come back as Hive columns, interval included for klines.
    klines = pd.read_parquet(dest / "market=spot/kind=klines")
    assert sorted(klines["interval"].astype(str).unique()) == ["1h", "1m"]
    assert sorted(klines["date"].astype(str).unique()) == ["2024-03-01", "2024-03-02"]
    # The job's stats.json, outside every dataset, sums the same rows; pyarrow and pandas
    # read the whole dest too (DuckDB and polars want one kind's schema at a time).
    total = sum(expected.values())
    assert job_stats(dest, "kinds")["rows_out"] == total
    assert ds.dataset(dest, partitioning="hive").count_rows() == total
    assert len(pd.read_parquet(dest)) == total
    # Nothing a reader would open sits in the tree but the partitions' data.
    readable = [
        str(p.relative_to(dest))
        for p in dest.rglob("*")
        if p.is_file() and not any(part[0] in "._" for part in p.relative_to(dest).parts)
    ]
    assert readable and all(p.endswith("/data.parquet") for p in readable), readable
    # An export goes beside the output, never into it (DuckDB's glob would read it there,
    # even under an underscored folder).
    for inside in (dest, dest / "market=um", dest / "_export"):
        refused = daemon.bfctl("export", "kinds", "--dest", str(inside))
        assert refused.returncode != 0 and "export beside it" in refused.stderr, refused.stderr
    assert not (dest / "_export").exists() and not (dest / "zips.parquet").exists()
    exported = daemon.bfctl_json("export", "kinds", "--dest", str(tmp_path / "out-export"))
    assert exported["total"] == 10
    counted = read_by_every_reader(dest / "market=um/kind=trades")
    assert counted == dict.fromkeys(counted, expected["market=um/kind=trades"])
