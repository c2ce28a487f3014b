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
