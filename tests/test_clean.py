"""Clean jobs end to end: the real bfd cleans generated Binance zips in the exact layout.

The corpus carries the upstream defects; what the output must hold is computed
here from the generated rows, independently of the cleaner, and DuckDB reads
the output with its partition columns.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import grpc
import pyarrow.parquet as pq
import pytest
from conftest import AWS_ENV, Daemon, gone, public_bucket, sha256sum_line, wait_until

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from tests.binance_data import (
    AGG_HEADER,
    KLINE_HEADER,
    TRADE_HEADERS,
    Trade,
    day_start_ms,
    trade_lines,
    trades,
    trades_path,
    write_trades_zip,
    write_zip,
)

DAY = date(2024, 3, 1)
DAY2 = DAY + timedelta(days=1)
MICROS_DAY = date(2025, 1, 2)  # spot files from 2025 carry microseconds
ENDED = {"completed", "failed"}


@dataclass
class Corpus:
    """Zips written under root, and the rows each (market, symbol, day) must end up with."""

    root: Path
    # (market, symbol) -> trade id -> (day, trade): trades, deduplicated by id as expected.
    trades: dict[tuple[str, str], dict[int, tuple[date, Trade]]] = field(default_factory=dict)

    def add(self, market: str, symbol: str, rows: list[Trade], unit: str = "ms") -> None:
        kept = self.trades.setdefault((market, symbol), {})
        for row in rows:
            time_us = row.time_us if unit == "us" else row.time_us // 1000 * 1000
            day = date(1970, 1, 1) + timedelta(microseconds=time_us)
            kept[row.id] = (day, Trade(row.id, row.price, row.qty, time_us))

    def expected(self) -> list[tuple]:
        """(market, symbol, date, rows, distinct ids, min time, max time, sum qty) sorted."""
        groups: dict[tuple, list[Trade]] = {}
        for (market, symbol), kept in self.trades.items():
            for day, row in kept.values():
                groups.setdefault((market, symbol, day.isoformat()), []).append(row)
        return sorted(
            (
                *key,
                len(rows),
                len({r.id for r in rows}),
                min(r.time_us for r in rows),
                max(r.time_us for r in rows),
                round(sum(r.qty for r in rows), 4),
            )
            for key, rows in groups.items()
        )


def write_corpus(root: Path) -> Corpus:
    corpus = Corpus(root)
    # Spot trades in ms without a header; the day's last trade again in the next day's file,
    # and a non-numeric price there (that row is rejected, the rest lands).
    first, second = trades(DAY, 1, 300, seed=1), trades(DAY2, 301, 300, seed=2)
    write_zip(root, trades_path("spot", "BTCUSDT", DAY), trade_lines(first, "spot"))
    lines = trade_lines(first[-1:] + second, "spot")
    lines[5] = lines[5].replace(f"{second[4].price:.2f}", "abc")
    write_zip(root, trades_path("spot", "BTCUSDT", DAY2), lines)
    corpus.add("spot", "BTCUSDT", first + second[:4] + second[5:])
    # Spot trades in µs with a header (2025), same series.
    micros = trades(MICROS_DAY, 5000, 200, seed=3)
    write_zip(
        root,
        trades_path("spot", "BTCUSDT", MICROS_DAY),
        trade_lines(micros, "spot", "us"),
        TRADE_HEADERS["spot"],
    )
    corpus.add("spot", "BTCUSDT", micros, unit="us")
    # COIN-M trades.
    coin = trades(DAY, 70, 150, seed=4)
    write_zip(root, trades_path("cm", "BTCUSD_PERP", DAY), trade_lines(coin, "cm"))
    corpus.add("cm", "BTCUSD_PERP", coin)
    # USD-M trades: a monthly beside its daily files, one of them with doubled rows.
    day_one, day_two = trades(DAY, 1, 250, seed=5), trades(DAY2, 251, 250, seed=6)
    doubled = trade_lines(day_one, "um")
    doubled += doubled[10:60]
    write_zip(root, trades_path("um", "ETHUSDT", DAY), doubled, TRADE_HEADERS["um"])
    write_zip(root, trades_path("um", "ETHUSDT", DAY2), trade_lines(day_two, "um"))
    monthly = trades_path("um", "ETHUSDT", DAY, monthly=True)
    write_zip(root, monthly, trade_lines(day_one + day_two, "um"))
    corpus.add("um", "ETHUSDT", day_one + day_two)
    # USD-M aggTrades with a header; spot klines 1m.
    start = day_start_ms(DAY)
    agg = [
        f"{100 + i},42000.5,0.25,{500 + 2 * i},{501 + 2 * i},{start + i * 1000},true"
        for i in range(40)
    ]
    write_zip(
        root,
        "data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-03-01.zip",
        agg,
        AGG_HEADER["um"],
    )
    klines = [
        f"{start + m * 60_000},1.0,2.0,0.5,1.5,10.0,{start + m * 60_000 + 59_999},15.0,7,4.0,6.0,0"
        for m in range(90)
    ]
    write_zip(
        root, "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip", klines, KLINE_HEADER
    )
    # Broken: a truncated zip, and a USD-M file with spot's 7 columns.
    broken = write_zip(
        root, trades_path("spot", "XRPUSDT", DAY), trade_lines(trades(DAY, 1, 500), "spot")
    )
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    write_zip(root, trades_path("um", "LTCUSDT", DAY), trade_lines(trades(DAY, 1, 20), "spot"))
    # Not a layout we clean: left alone, counted.
    write_zip(root, "data/spot/daily/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-03-01.zip", ["x"])
    return corpus


def outputs(dest: Path) -> dict[str, str]:
    """sha256 of every partition file under dest (data and stats), by relative path."""
    return {
        str(p.relative_to(dest)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dest.glob("market=*/**/*"))
        if p.is_file()
    }


def stamps(dest: Path) -> dict[str, int]:
    return {
        str(p.relative_to(dest)): p.stat().st_mtime_ns
        for p in dest.glob("market=*/**/*")
        if p.is_file()
    }


def trade_aggregates(dest: Path) -> list[tuple]:
    return sorted(
        duckdb.sql(
            "SELECT market, symbol, CAST(date AS VARCHAR), count(*), count(DISTINCT id), "
            "min(epoch_us(time)), max(epoch_us(time)), round(sum(qty), 4) "
            f"FROM read_parquet('{dest}/market=*/kind=trades/**/*.parquet', "
            "hive_partitioning = true, union_by_name = true) GROUP BY ALL"
        ).fetchall()
    )


def clean(daemon: Daemon, name: str, *args: str) -> pb.Job:
    submitted = daemon.bfctl("submit", "clean", name, *args)
    assert submitted.returncode == 0, submitted.stderr
    return daemon.wait_state(name, ENDED, timeout=120)


def test_a_corpus_with_every_defect_lands_its_good_data_and_fails_its_bad_zips(
    daemon: Daemon, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "in")
    dest = tmp_path / "out"
    job = clean(daemon, "c1", "--input", str(corpus.root), "--dest", str(dest))
    assert job.state == "failed" and dict(job.counts) == {"done": 9, "failed": 2}
    assert "1 zip(s) outside the Binance layout" in job.message
    failures = daemon.bfctl_json("failures", "c1")["failures"]
    assert sorted((f["item"].split("/")[-1], f["step"], f["error_class"]) for f in failures) == [
        ("LTCUSDT-trades-2024-03-01.zip", "schema", "wrong_column_count"),
        ("XRPUSDT-trades-2024-03-01.zip", "open", "bad_zip"),
    ]
    assert trade_aggregates(dest) == corpus.expected()
    for kind, rows in (("aggTrades", 40), ("klines", 90)):
        found = duckdb.sql(
            f"SELECT kind, count(*) FROM read_parquet('{dest}/market=*/kind={kind}/**/*.parquet', "
            "hive_partitioning = true) GROUP BY ALL"
        ).fetchall()
        assert found == [(kind, rows)]
    interval = duckdb.sql(
        f"SELECT DISTINCT interval FROM read_parquet('{dest}/market=spot/kind=klines/**/*.parquet'"
        ", hive_partitioning = true)"
    ).fetchall()
    assert interval == [("1m",)]

    day_stats = json.loads(
        (dest / "market=um/kind=trades/symbol=ETHUSDT/date=2024-03-01/_stats.json").read_text()
    )
    # 250 rows, again in the monthly, and 50 doubled: 550 in, 250 out.
    assert (day_stats["rows_in"], day_stats["rows_out"], day_stats["duplicates"]) == (550, 250, 300)
    assert day_stats["missing_ids"] == 0 and len(day_stats["sources"]) == 3
    spot_day2 = dest / "market=spot/kind=trades/symbol=BTCUSDT/date=2024-03-02/_stats.json"
    assert json.loads(spot_day2.read_text())["rows_rejected"] == {"not_a_number": 1}
    job_stats = json.loads((dest / "_jobs/c1/stats.json").read_text())
    assert job_stats["rows_rejected"] == {"not_a_number": 1}
    assert job_stats["rows_out"] == sum(row[3] for row in corpus.expected()) + 40 + 90
    assert (job_stats["zips_done"], job_stats["failed"], job_stats["outside"]) == (9, 2, 1)
    assert job_stats["pyarrow"] and job_stats["time_max"].startswith("2025-01-02")

    exported = daemon.bfctl_json("export", "c1", "--dest", str(tmp_path / "report"))
    assert (exported["total"], exported["successful"], exported["failed"]) == (11, 9, 2)
    zips = pq.read_table(tmp_path / "report/zips.parquet").to_pylist()
    assert {z["path"]: z["state"] for z in zips}[trades_path("spot", "XRPUSDT", DAY)] == "failed"
    assert sum(z["rows_rejected"] or 0 for z in zips) == 1

    # The same input into another dest: the same bytes, file for file.
    again = clean(daemon, "c2", "--input", str(corpus.root), "--dest", str(tmp_path / "out2"))
    assert again.state == "failed"
    assert outputs(tmp_path / "out2") == outputs(dest) and len(outputs(dest)) == 16

    # One zip replaced: only the partitions it feeds are rebuilt, the rest not even rewritten.
    before, written = outputs(dest), stamps(dest)
    replaced = trades(DAY2, 301, 320, seed=9)
    write_zip(corpus.root, trades_path("spot", "BTCUSDT", DAY2), trade_lines(replaced, "spot"))
    resumed = daemon.bfctl("resume", "c1")
    assert resumed.returncode == 0, resumed.stderr
    job = daemon.wait_state("c1", ENDED, timeout=120)
    assert dict(job.counts) == {"done": 9, "failed": 2}
    after = outputs(dest)
    series = "market=spot/kind=trades/symbol=BTCUSDT/"
    feeds = {f"{series}date={d}" for d in ("2024-03-01", "2024-03-02", "2024-03-03")}
    changed = {name for name in after if before.get(name) != after[name]}
    assert f"{series}date=2024-03-02/data.parquet" in changed
    assert {name.rsplit("/", 1)[0] for name in changed} <= feeds
    untouched = [name for name in written if name.rsplit("/", 1)[0] not in feeds]
    assert untouched and all(stamps(dest)[name] == written[name] for name in untouched)
    corpus.trades[("spot", "BTCUSDT")] = {
        k: v for k, v in corpus.trades[("spot", "BTCUSDT")].items() if v[0] != DAY2
    }
    corpus.add("spot", "BTCUSDT", replaced)
    assert trade_aggregates(dest) == corpus.expected()

    # A failed zip fixed and retried by step: it lands, the other failure stays.
    xrp = trades(DAY, 1, 500, seed=11)
    write_zip(corpus.root, trades_path("spot", "XRPUSDT", DAY), trade_lines(xrp, "spot"))
    retried = daemon.bfctl("retry", "c1", "--step", "open")
    assert retried.returncode == 0, retried.stderr
    job = daemon.wait_state("c1", ENDED, timeout=120)
    assert dict(job.counts) == {"done": 10, "failed": 1}
    corpus.add("spot", "XRPUSDT", xrp)
    assert trade_aggregates(dest) == corpus.expected()


def test_kinds_and_markets_filter_and_bad_requests_are_refused_with_reasons(
    daemon: Daemon, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "in")
    dest = tmp_path / "out"
    job = clean(
        daemon, "k", "--input", str(corpus.root), "--dest", str(dest), "--kinds", "klines,aggTrades"
    )
    assert job.state == "completed" and dict(job.counts) == {"done": 2}
    assert "9 zip(s) left out by the kinds/markets filters" in job.message
    assert sorted(p.parent.name for p in dest.glob("market=*/*")) == [
        "market=spot",
        "market=um",
    ]
    refusals = {
        "both": pb.CleanSpec(input=str(corpus.root), after="k", dest=str(dest)),
        "neither": pb.CleanSpec(dest=str(dest)),
        "relative": pb.CleanSpec(input="in", dest=str(dest)),
        "kind": pb.CleanSpec(input=str(corpus.root), dest=str(dest), kinds=["bookTicker"]),
        "inside": pb.CleanSpec(input=str(corpus.root), dest=str(corpus.root / "out")),
    }
    for name, spec in refusals.items():
        with pytest.raises(grpc.RpcError) as refused:
            daemon.stub.Submit(pb.SubmitRequest(name=name, clean=spec), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    with pytest.raises(grpc.RpcError) as not_a_download:
        daemon.stub.Submit(
            pb.SubmitRequest(name="x", clean=pb.CleanSpec(after="k", dest=str(dest))), timeout=10
        )
    assert not_a_download.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "puts no verified files" in not_a_download.value.details()
    written = stamps(dest)
    resumed = daemon.bfctl("resume", "k")  # an ended clean job runs again; nothing changed
    assert resumed.returncode == 0, resumed.stderr
    assert daemon.wait_state("k", ENDED).state == "completed"
    assert stamps(dest) == written and written


def test_clean_after_a_download_cleans_each_verified_zip(
    make_daemon, moto_endpoint: str, tmp_path: Path
) -> None:
    daemon = make_daemon("--max-attempts", "2").start(env=AWS_ENV)
    corpus = Corpus(tmp_path / "gen")
    objects = {}
    for n, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
        for day in (DAY, DAY2, DAY2 + timedelta(days=1)):
            rows = trades(day, 1 + 1000 * day.day, 200, seed=n * 10 + day.day)
            path = write_zip(corpus.root, trades_path("um", symbol, day), trade_lines(rows, "um"))
            corpus.add("um", symbol, rows)
            key = trades_path("um", symbol, day)
            objects[key] = path.read_bytes()
            objects[f"{key}.CHECKSUM"] = sha256sum_line(objects[key], path.name)
    bucket = public_bucket(moto_endpoint, objects)
    mirror, dest = tmp_path / "mirror", tmp_path / "out"
    submitted = daemon.bfctl(
        "submit", "download", "mirror", "--s3", f"{moto_endpoint}/{bucket}/data",
        "--dest", str(mirror),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = clean(daemon, "cleaned", "--after", "mirror", "--dest", str(dest))
    assert daemon.wait_state("mirror", ENDED).state == "completed"
    assert job.state == "completed" and dict(job.counts) == {"done": 6}
    assert trade_aggregates(dest) == corpus.expected()
    shas = {
        z["path"]: z["sha256"]
        for z in json.loads((dest / "_jobs/cleaned/stats.json").read_text())["zips"]
    }
    assert shas == {
        key.removeprefix("data/"): hashlib.sha256(objects[key]).hexdigest()
        for key in objects
        if key.endswith(".zip")
    }
    missing = daemon.bfctl("submit", "clean", "x", "--after", "nope", "--dest", str(dest))
    assert missing.returncode != 0 and "nope" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert daemon.stop() == 0, daemon.log_tail()


@pytest.mark.slow
def test_kill_9_while_cleaning_leaves_no_partial_parquet_and_resumes_to_the_same_bytes(
    make_daemon, tmp_path: Path
) -> None:
    root = tmp_path / "in"
    for n, symbol in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")):
        for d in range(4):
            day = DAY + timedelta(days=d)
            write_trades_zip(root, "spot", symbol, day, 1 + d * 300_000, 300_000, seed=n * 7 + d)
    daemon = make_daemon("--cpu-workers", "2").start()
    dest = tmp_path / "out"
    submitted = daemon.bfctl("submit", "clean", "big", "--input", str(root), "--dest", str(dest))
    assert submitted.returncode == 0, submitted.stderr
    deadline = time.monotonic() + 60
    while not list(dest.glob("market=*/**/data.parquet")):
        # bfd answers status at once while workers clean.
        job = daemon.stub.Status(pb.JobRef(name="big"), timeout=2)
        assert job.state in ("queued", "running") and time.monotonic() < deadline
        time.sleep(0.05)
    workers = daemon.workers()
    daemon.kill9()
    # Its workers notice they are orphans and end: what they wrote is then all there is.
    wait_until(lambda: all(gone(pid) for pid in workers), what="bfd's orphaned workers to end")
    for data in dest.glob("market=*/**/*.parquet"):
        assert pq.read_metadata(data).num_rows > 0  # complete files only, under their names
    daemon.start()
    assert "repair: job big:" in daemon.log.read_text()  # it was killed with zips in flight
    assert daemon.wait_state("big", ENDED, timeout=180).state == "completed"
    assert not list(dest.rglob("*.tmp"))
    reference = make_daemon("--cpu-workers", "2").start()
    submitted = reference.bfctl(
        "submit", "clean", "ref", "--input", str(root), "--dest", str(tmp_path / "ref")
    )
    assert submitted.returncode == 0, submitted.stderr
    assert reference.wait_state("ref", ENDED, timeout=180).state == "completed"
    assert outputs(dest) == outputs(tmp_path / "ref") and len(outputs(dest)) == 32
    with pytest.raises(grpc.RpcError):
        daemon.stub.Status(pb.JobRef(name="nope"), timeout=5)
    for running in (daemon, reference):
        assert running.stop() == 0, running.log_tail()
