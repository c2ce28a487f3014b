"""The cleaner's core on real zips in the Binance layout: layout, parsing, partitions.

Generated zips carry the upstream defects (headers that come and go, ms and µs,
doubled rows, a trade repeated in the next day's file, monthly beside daily, broken
zips, wrong widths, non-numbers); expected results are computed from the generated
rows, not by the cleaner. DuckDB reads what was written.
"""

import hashlib
import json
import zipfile
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from bulkforge.daemon.cleaner import partition
from bulkforge.daemon.cleaner.layout import NotInLayout, parse_path
from bulkforge.daemon.cleaner.parse import CleanFailed, parse_zip
from bulkforge.daemon.cleaner.schema import TABLES
from bulkforge.daemon.cleaner.series import clean_series
from bulkforge.daemon.cleaner.work import SeriesTask, ZipInput
from tests.binance_data import (
    AGG_HEADER,
    KLINE_HEADER,
    TRADE_HEADERS,
    day_start_ms,
    trade_lines,
    trades,
    trades_path,
    write_zip,
)

DAY = date(2024, 3, 1)


def test_layout_paths_name_market_kind_symbol_interval_and_period() -> None:
    spot = parse_path("data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-03-01.zip")
    assert (spot.series, spot.monthly, spot.first, spot.last) == (
        ("spot", "trades", "BTCUSDT", None),
        False,
        DAY,
        DAY,
    )
    assert spot.dates() == [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]
    kline = parse_path("futures/cm/monthly/klines/BTCUSD_PERP/1m/BTCUSD_PERP-1m-2024-02.zip")
    assert kline.series == ("cm", "klines", "BTCUSD_PERP", "1m")
    assert (kline.first, kline.last) == (date(2024, 2, 1), date(2024, 2, 29))
    agg = parse_path("data/futures/um/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-03-01.zip")
    assert agg.series == ("um", "aggTrades", "ETHUSDT", None)


@pytest.mark.parametrize(
    "path",
    [
        "data/option/daily/trades/X/X-trades-2024-03-01.zip",
        "data/spot/daily/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-03-01.zip",
        "data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-03.zip",
        "data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-2024-03-01.zip",
        "data/spot/daily/trades/BTCUSDT/ETHUSDT-trades-2024-03-01.zip",
        "data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-02-30.zip",
        "data/spot/daily/klines/BTCUSDT/BTCUSDT-1m-2024-03-01.zip",
        "data/spot/daily/trades/../BTCUSDT-trades-2024-03-01.zip",
        "data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-03-01.csv",
    ],
)
def test_paths_outside_the_layout_are_refused_with_a_reason(path: str) -> None:
    with pytest.raises(NotInLayout, match=r": "):
        parse_path(path)


def _parse(root: Path, relative: str):
    source = parse_path(relative)
    return parse_zip(root / relative, TABLES[(source.market, source.kind)])


@pytest.mark.parametrize(("unit", "header"), [("ms", False), ("us", True)])
def test_spot_trades_in_ms_or_us_with_or_without_header(tmp_path, unit, header) -> None:
    rows = trades(DAY, 1000, 50)
    relative = trades_path("spot", "BTCUSDT", DAY)
    write_zip(
        tmp_path,
        relative,
        trade_lines(rows, "spot", unit),
        TRADE_HEADERS["spot"] if header else None,
    )
    parsed = _parse(tmp_path, relative)
    assert (parsed.header, parsed.units, parsed.rows_in, dict(parsed.rejected)) == (
        header,
        (unit,),
        50,
        {},
    )
    table = parsed.rows
    assert table.column_names == [
        "id",
        "price",
        "qty",
        "quote_qty",
        "time",
        "is_buyer_maker",
        "is_best_match",
    ]
    expected_us = [r.time_us // 1000 * 1000 if unit == "ms" else r.time_us for r in rows]
    assert [t.timestamp() * 1e6 for t in table["time"].to_pylist()] == pytest.approx(expected_us)
    assert table["id"].to_pylist() == [r.id for r in rows]
    assert table["is_buyer_maker"].to_pylist() == [r.id % 3 == 0 for r in rows]


def test_futures_aggtrades_with_a_header_and_coin_m_trades(tmp_path) -> None:
    start = day_start_ms(DAY)
    lines = [
        f"{100 + i},42000.5,0.25,{500 + 2 * i},{501 + 2 * i},{start + i * 1000},true"
        for i in range(5)
    ]
    relative = "data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-03-01.zip"
    write_zip(tmp_path, relative, lines, AGG_HEADER["um"])
    parsed = _parse(tmp_path, relative)
    assert parsed.header and parsed.rows.num_rows == 5
    assert parsed.rows.column_names[-1] == "is_buyer_maker"
    cm = trades(DAY, 7, 20)
    relative = trades_path("cm", "BTCUSD_PERP", DAY)
    write_zip(tmp_path, relative, trade_lines(cm, "cm"), None)
    parsed = _parse(tmp_path, relative)
    assert "base_qty" in parsed.rows.column_names and parsed.rows.num_rows == 20
    assert parsed.rows.schema.field("qty").metadata == {b"meaning": b"contracts"}


def test_spot_klines_one_minute(tmp_path) -> None:
    start = day_start_ms(DAY)
    lines = [
        f"{start + m * 60_000},1.0,2.0,0.5,1.5,10.0,{start + m * 60_000 + 59_999},15.0,7,4.0,6.0,0"
        for m in range(30)
    ]
    relative = "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-03-01.zip"
    write_zip(tmp_path, relative, lines, KLINE_HEADER)
    parsed = _parse(tmp_path, relative)
    assert parsed.rows.num_rows == 30 and parsed.rows["count"].to_pylist() == [7] * 30


def test_bad_rows_are_rejected_by_reason_and_the_rest_kept(tmp_path) -> None:
    rows = trades(DAY, 1, 10)
    lines = trade_lines(rows, "um")
    lines[2] = lines[2].replace(f"{rows[2].price:.2f}", "abc")
    lines[4] = lines[4] + ",extra"
    lines[6] = lines[6].replace(str(rows[6].time_us // 1000), "12345")
    relative = trades_path("um", "BTCUSDT", DAY)
    write_zip(tmp_path, relative, lines)
    parsed = _parse(tmp_path, relative)
    assert dict(parsed.rejected) == {"not_a_number": 1, "wrong_column_count": 1, "time_unit": 1}
    assert parsed.rows_in == 10
    assert parsed.rows["id"].to_pylist() == [r.id for i, r in enumerate(rows) if i not in (2, 4, 6)]


def test_a_truncated_zip_and_a_csv_of_the_wrong_width_fail_with_their_step(tmp_path) -> None:
    relative = trades_path("spot", "BTCUSDT", DAY)
    path = write_zip(tmp_path, relative, trade_lines(trades(DAY, 1, 2000), "spot"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CleanFailed) as broken:
        _parse(tmp_path, relative)
    assert (broken.value.step, broken.value.error_class) == ("open", "bad_zip")
    relative = trades_path("spot", "ETHUSDT", DAY)
    path = write_zip(tmp_path, relative, trade_lines(trades(DAY, 1, 2000), "spot"))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the deflated member: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CleanFailed) as corrupt:
        _parse(tmp_path, relative)
    assert (corrupt.value.step, corrupt.value.error_class) == ("open", "bad_zip")
    relative = trades_path("um", "BTCUSDT", DAY)
    write_zip(tmp_path, relative, trade_lines(trades(DAY, 1, 5), "spot"))  # 7 fields, not 6
    with pytest.raises(CleanFailed) as wide:
        _parse(tmp_path, relative)
    assert (wide.value.step, wide.value.error_class) == ("schema", "wrong_column_count")


def _clean(root: Path, relatives: list[str], out: Path, empty=None) -> dict[date, dict]:
    """What a clean job's worker does for one series: every partition its zips feed."""
    out.mkdir(parents=True, exist_ok=True)  # a job's dest exists before it runs
    zips = [
        ZipInput(n, relative, str(root), 0, 0, None, home=True)
        for n, relative in enumerate(relatives)
    ]
    series = {parse_path(relative).series_dir for relative in relatives}
    assert len(series) == 1
    result = clean_series(SeriesTask(str(out), series.pop(), tuple(zips), empty or {}))
    written = {}
    for stats in out.rglob(partition.STATS_FILE):
        written[date.fromisoformat(stats.parent.name.removeprefix("date="))] = json.loads(
            stats.read_text()
        )
    return written, result


def test_duplicates_across_days_within_files_and_monthly_beside_daily(tmp_path) -> None:
    day2 = DAY + timedelta(days=1)
    first, second = trades(DAY, 1, 400, seed=1), trades(day2, 401, 400, seed=2)
    day1_lines = trade_lines(first, "um")
    # Doubled rows inside a file, and the day's last trade again in the next day's file.
    day1_lines += day1_lines[100:150]
    day2_lines = trade_lines(first[-1:], "um") + trade_lines(second, "um")
    root, out = tmp_path / "in", tmp_path / "out"
    relatives = [trades_path("um", "BTCUSDT", DAY), trades_path("um", "BTCUSDT", day2)]
    write_zip(root, relatives[0], day1_lines, TRADE_HEADERS["um"])
    write_zip(root, relatives[1], day2_lines)
    monthly = trades_path("um", "BTCUSDT", DAY, monthly=True)
    write_zip(root, monthly, trade_lines(first + second, "um"))
    written, result = _clean(root, [*relatives, monthly], out)
    assert result.parsed == 3 and sorted(result.built) == [
        (DAY + timedelta(days=n)).isoformat() for n in range(-1, 32)
    ]
    assert sorted(written) == [DAY, day2]
    assert written[DAY]["rows_out"] == 400 and written[day2]["rows_out"] == 400
    # The monthly copy, the doubled rows, the spill.
    assert written[DAY]["duplicates"] == 400 + 50 + 1
    assert written[DAY]["missing_ids"] == 0 and written[day2]["largest_id_gap"] == 0
    assert [s["path"] for s in written[DAY]["sources"]] == sorted([*relatives, monthly])
    every = first + second
    found = duckdb.sql(
        f"SELECT symbol, CAST(date AS VARCHAR), count(*), count(DISTINCT id), min(time), "
        f"max(time), round(sum(qty), 6) FROM read_parquet('{out}/**/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY 2"
    ).fetchall()
    expected = []
    for day, rows in ((DAY, first), (day2, second)):
        expected.append(
            (
                "BTCUSDT",
                day.isoformat(),
                len(rows),
                len(rows),
                round(sum(r.qty for r in rows), 6),
            )
        )
    assert [(s, d, n, i, q) for s, d, n, i, _lo, _hi, q in found] == expected
    times = duckdb.sql(
        f"SELECT epoch_us(time) FROM read_parquet('{out}/**/*.parquet') ORDER BY time, id"
    ).fetchall()
    assert [t for (t,) in times] == [r.time_us // 1000 * 1000 for r in every]
    # Again over the same output, told which days came out empty: nothing is read or written.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    empty = {day: digest for day, (digest, rows) in result.built.items() if not rows}
    _, again = _clean(root, [*relatives, monthly], out, empty)
    assert (again.parsed, again.built) == (0, {})
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_the_same_inputs_give_the_same_bytes_and_a_change_rewrites_only_its_days(tmp_path) -> None:
    root = tmp_path / "in"
    days = [DAY + timedelta(days=n) for n in range(4)]
    relatives = []
    for n, day in enumerate(days):
        relative = trades_path("spot", "ETHUSDT", day)
        write_zip(root, relative, trade_lines(trades(day, 1 + 300 * n, 300, seed=n), "spot"))
        relatives.append(relative)

    def digests(out: Path) -> dict[str, str]:
        return {
            str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.parquet"))
        }

    _clean(root, relatives, tmp_path / "a")
    _clean(root, list(reversed(relatives)), tmp_path / "b")
    assert digests(tmp_path / "a") == digests(tmp_path / "b") and len(digests(tmp_path / "a")) == 4
    changed = trades(days[2], 601, 299, seed=9)
    write_zip(root, relatives[2], trade_lines(changed, "spot"))
    _clean(root, relatives, tmp_path / "c")
    before, after = digests(tmp_path / "a"), digests(tmp_path / "c")
    differing = sorted(name.split("/")[3] for name in before if before[name] != after[name])
    # Day 2's own partition, and its neighbours only if a changed row fell on them (none does).
    assert differing == [f"date={days[2].isoformat()}"]


def test_a_stored_zip_is_read_as_well_as_a_deflated_one(tmp_path) -> None:
    relative = trades_path("spot", "BTCUSDT", DAY)
    rows = trades(DAY, 1, 100)
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(path.stem + ".csv", "\n".join(trade_lines(rows, "spot")) + "\n")
    parsed = _parse(tmp_path, relative)
    assert parsed.rows["id"].to_pylist() == [r.id for r in rows]
