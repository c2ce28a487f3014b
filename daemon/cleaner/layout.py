"""Where a zip sits in the data.binance.vision layout, and which output partitions it feeds.

    data/{spot,futures/um,futures/cm}/{daily,monthly}/{klines,aggTrades,trades}/
        SYMBOL/[INTERVAL/]SYMBOL-[INTERVAL-|kind-]YYYY-MM[-DD].zip

A zip's path is untrusted: it is parsed strictly, and one that does not fit is refused
with the reason, never guessed at.
"""

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import PurePosixPath

MARKETS = {"spot": "spot", "futures/um": "um", "futures/cm": "cm"}
KINDS = ("klines", "aggTrades", "trades")
# Kline intervals Binance publishes; anything else in that place is not a kline file.
INTERVALS = frozenset(
    [
        "1s",
        "1m",
        "3m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "8h",
        "12h",
        "1d",
        "3d",
        "1w",
        "1mo",
    ]
)
_SYMBOL = re.compile(r"^[A-Z0-9_]{2,40}$")
_PERIOD = re.compile(r"^(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?$")


class NotInLayout(ValueError):
    """The path is not a zip of the data.binance.vision layout; the message says why."""


@dataclass(frozen=True)
class ZipSource:
    """What one zip holds: rows of one (market, kind, symbol[, interval]) for its period."""

    market: str  # spot, um or cm
    kind: str  # klines, aggTrades or trades
    symbol: str
    interval: str | None
    monthly: bool
    first: date
    last: date

    @property
    def series(self) -> tuple[str, str, str, str | None]:
        """The rows this zip adds to: one output table, partitioned by date."""
        return (self.market, self.kind, self.symbol, self.interval)

    @property
    def series_dir(self) -> str:
        """The series' directory below the output root (Hive style), also its name in the store."""
        parts = [f"market={self.market}", f"kind={self.kind}", f"symbol={self.symbol}"]
        if self.interval is not None:
            parts.append(f"interval={self.interval}")
        return "/".join(parts)

    def dates(self) -> list[date]:
        """The partitions this zip may feed: its own days and one on either side.

        A trade stamped just before midnight is also published in the next day's file
        (an upstream defect), so the day before and after are fed by it too.
        """
        days = (self.last - self.first).days + 3
        return [self.first - timedelta(days=1) + timedelta(days=n) for n in range(days)]


def parse_path(relative: str) -> ZipSource:
    """The ZipSource of a path relative to the layout's root (a leading `data/` is optional)."""
    parts = PurePosixPath(relative).parts
    if parts and parts[0] == "data":
        parts = parts[1:]
    if not parts or not parts[-1].endswith(".zip"):
        raise NotInLayout(f"{relative}: not a .zip")
    if parts[0] == "futures":
        market_key, parts = "/".join(parts[:2]), parts[2:]
    else:
        market_key, parts = parts[0], parts[1:]
    if market_key not in MARKETS:
        raise NotInLayout(f"{relative}: market {market_key!r} is not one of {sorted(MARKETS)}")
    if len(parts) < 4:
        raise NotInLayout(f"{relative}: expected {{daily,monthly}}/KIND/SYMBOL/[INTERVAL/]FILE")
    frequency, kind, symbol, *rest = parts
    if frequency not in ("daily", "monthly"):
        raise NotInLayout(f"{relative}: {frequency!r} is neither daily nor monthly")
    if kind not in KINDS:
        raise NotInLayout(f"{relative}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if not _SYMBOL.match(symbol):
        raise NotInLayout(f"{relative}: {symbol!r} is not a symbol")
    interval = None
    if kind == "klines":
        if len(rest) != 2 or rest[0] not in INTERVALS:
            raise NotInLayout(f"{relative}: klines need SYMBOL/INTERVAL/FILE")
        interval = rest[0]
    elif len(rest) != 1:
        raise NotInLayout(f"{relative}: expected SYMBOL/FILE")
    first, last = _period(relative, rest[-1], symbol, interval or kind, frequency == "monthly")
    return ZipSource(
        MARKETS[market_key], kind, symbol, interval, frequency == "monthly", first, last
    )


def _period(relative: str, name: str, symbol: str, middle: str, monthly: bool) -> tuple[date, date]:
    prefix = f"{symbol}-{middle}-"
    if not name.startswith(prefix):
        raise NotInLayout(f"{relative}: the file should be named {prefix}PERIOD.zip")
    match = _PERIOD.match(name[len(prefix) : -len(".zip")])
    if match is None or monthly != (match["day"] is None):
        expected = "YYYY-MM" if monthly else "YYYY-MM-DD"
        raise NotInLayout(f"{relative}: the period should be {expected}")
    try:
        year, month = int(match["year"]), int(match["month"])
        if monthly:
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        day = date(year, month, int(match["day"]))
    except ValueError:
        raise NotInLayout(f"{relative}: {match[0]} is not a date") from None
    return day, day
