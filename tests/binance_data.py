"""Zips in the data.binance.vision layout, generated: the test's own source of truth.

Each CSV is written as Binance writes it (header or none, ms or µs, True/False or
true/false), and the rows are also returned as Python values so a test can compute
what the cleaned output must hold, independently of the cleaner.
"""

import io
import random
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

TRADE_HEADERS = {
    "spot": "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match",
    "um": "id,price,qty,quote_qty,time,is_buyer_maker",
    "cm": "id,price,qty,base_qty,time,is_buyer_maker",
}
AGG_HEADER = {
    "spot": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
    "is_buyer_maker,is_best_match",
    "um": "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker",
}
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
MARKET_DIR = {"spot": "spot", "um": "futures/um", "cm": "futures/cm"}


@dataclass(frozen=True)
class Trade:
    id: int
    price: float
    qty: float
    time_us: int


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def trades(day: date, first_id: int, count: int, seed: int = 0) -> list[Trade]:
    """count trades spread over the day, ids consecutive, times non-decreasing."""
    rng = random.Random(seed)
    start = day_start_ms(day) * 1000
    times = sorted(rng.randrange(0, 86_400_000_000) for _ in range(count))
    return [
        Trade(
            first_id + i,
            round(rng.uniform(10, 70_000), 2),
            round(rng.uniform(0.001, 5), 6),
            start + t,
        )
        for i, t in enumerate(times)
    ]


def trade_lines(rows: list[Trade], market: str, unit: str = "ms") -> list[str]:
    lines = []
    for row in rows:
        time = row.time_us // 1000 if unit == "ms" else row.time_us
        maker = "True" if row.id % 3 == 0 else "False"
        if market != "spot":
            maker = maker.lower()
        second = round(row.price * row.qty, 8) if market != "cm" else round(row.qty / row.price, 8)
        fields = [str(row.id), f"{row.price:.2f}", f"{row.qty:.6f}", f"{second}", str(time), maker]
        if market == "spot":
            fields.append("True")
        lines.append(",".join(fields))
    return lines


def write_zip(root: Path, relative: str, lines: list[str], header: str | None = None) -> Path:
    """root/relative as a zip holding one CSV named like the zip (Binance's own naming)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(([header] if header else []) + lines) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.name.removesuffix(".zip") + ".csv", text)
    path.write_bytes(buffer.getvalue())
    return path


def trades_path(market: str, symbol: str, day: date, monthly: bool = False) -> str:
    period = day.strftime("%Y-%m") if monthly else day.isoformat()
    frequency = "monthly" if monthly else "daily"
    return f"data/{MARKET_DIR[market]}/{frequency}/trades/{symbol}/{symbol}-trades-{period}.zip"


def write_trades_zip(
    root: Path, market: str, symbol: str, day: date, first_id: int, count: int, seed: int = 0
) -> tuple[Path, dict]:
    """A daily trades zip of count rows, written fast (vectorised), and its aggregates.

    For volumes (benchmarks, crash tests): the CSV is written by pyarrow from numpy
    columns, so times are in ms (ids consecutive, times sorted over the day). The
    aggregates returned are computed from the columns themselves: rows, first and
    last id, min and max time in µs, and the sum of qty.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    start = day_start_ms(day)
    times = np.sort(rng.integers(0, 86_400_000, count)) + start
    ids = np.arange(first_id, first_id + count, dtype=np.int64)
    price = np.round(rng.uniform(10, 70_000, count), 2)
    qty = np.round(rng.uniform(0.001, 5, count), 6)
    columns = {"id": ids, "price": price, "qty": qty, "quote_qty": np.round(price * qty, 8)}
    columns |= {"time": times, "is_buyer_maker": ids % 3 == 0}
    if market == "spot":
        columns["is_best_match"] = np.ones(count, dtype=bool)
    buffer = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False)
    pacsv.write_csv(pa.table(columns), buffer, write_options=options)
    path = root / trades_path(market, symbol, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(path.name.removesuffix(".zip") + ".csv", buffer.getvalue())
    aggregates = {
        "rows": count,
        "first_id": first_id,
        "last_id": first_id + count - 1,
        "time_min_us": int(times[0]) * 1000,
        "time_max_us": int(times[-1]) * 1000,
        "qty": float(qty.sum()),
    }
    return path, aggregates
