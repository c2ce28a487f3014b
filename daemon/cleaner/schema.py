"""The explicit Arrow schema of every (market, kind) the cleaner writes, in one place.

Names are Binance's, in snake_case. Every column is non-nullable: a row missing a
value is rejected, not written with a hole.

Prices and quantities are float64, not decimal:
- Binance publishes them as decimal text with at most 8 fractional digits; every such
  value of up to 15 significant digits (all prices and quantities seen upstream) reads
  back as exactly the text it came from, and the relative error of larger ones (a
  kline's quote volume in the billions) is below 1.2e-16, far under one tick;
- every tool that reads the output (DuckDB, polars, pandas, Spark) computes on float64
  natively, where decimal128 becomes Python objects in pandas and is slower everywhere;
- it halves the bytes of decimal128 on disk and in memory.
Times are `timestamp[us, UTC]` whatever unit a file used (ms before 2025 on spot, µs after).

COIN-M (`cm`) klines keep the positions of the others, but `volume` and
`taker_buy_volume` count contracts and `quote_volume` / `taker_buy_quote_volume` are in
the base asset: each file records its market and these meanings in its schema metadata.
"""

from dataclasses import dataclass

import pyarrow as pa

TIME = pa.timestamp("us", tz="UTC")
F64, I64, BOOL = pa.float64(), pa.int64(), pa.bool_()

_KLINES = (
    ("open_time", TIME),
    ("open", F64),
    ("high", F64),
    ("low", F64),
    ("close", F64),
    ("volume", F64),
    ("close_time", TIME),
    ("quote_volume", F64),
    ("count", I64),
    ("taker_buy_volume", F64),
    ("taker_buy_quote_volume", F64),
    ("ignore", F64),
)
_AGG_FUTURES = (
    ("agg_trade_id", I64),
    ("price", F64),
    ("qty", F64),
    ("first_trade_id", I64),
    ("last_trade_id", I64),
    ("time", TIME),
    ("is_buyer_maker", BOOL),
)
_AGG_SPOT = (*_AGG_FUTURES, ("is_best_match", BOOL))
_TRADES_UM = (
    ("id", I64),
    ("price", F64),
    ("qty", F64),
    ("quote_qty", F64),
    ("time", TIME),
    ("is_buyer_maker", BOOL),
)
_TRADES_SPOT = (*_TRADES_UM, ("is_best_match", BOOL))
_TRADES_CM = (
    ("id", I64),
    ("price", F64),
    ("qty", F64),
    ("base_qty", F64),
    ("time", TIME),
    ("is_buyer_maker", BOOL),
)

_MEANINGS = {
    ("cm", "klines"): {
        "volume": "contracts",
        "taker_buy_volume": "contracts",
        "quote_volume": "base asset",
        "taker_buy_quote_volume": "base asset",
    },
    ("cm", "trades"): {"qty": "contracts", "base_qty": "base asset"},
    ("cm", "aggTrades"): {"qty": "contracts"},
}


@dataclass(frozen=True)
class Table:
    """How one (market, kind) is read and written."""

    market: str
    kind: str
    schema: pa.Schema
    # The natural key: one row per value after deduplication.
    key: str
    # Rows are sorted by (time, key).
    time: str

    @property
    def measures(self) -> list[str]:
        """Every number column (prices, quantities, ids, counts): finite, and never negative
        unless signed."""
        return [field.name for field in self.schema if field.type in (F64, I64)]

    @property
    def signed(self) -> frozenset[str]:
        """Number columns a negative value is no error in: Binance's `ignore`, unused."""
        return frozenset({"ignore"}) & set(self.schema.names)

    @property
    def times(self) -> list[str]:
        """Every timestamp column (read as integers of the file's unit, written in µs)."""
        return [field.name for field in self.schema if field.type == TIME]


def _table(market: str, kind: str, columns: tuple, key: str, time: str) -> Table:
    meanings = _MEANINGS.get((market, kind), {})
    fields = [
        pa.field(
            name,
            kind_of,
            nullable=False,
            metadata={"meaning": meanings[name]} if name in meanings else None,
        )
        for name, kind_of in columns
    ]
    metadata = {"market": market, "kind": kind, "key": key, "sorted_by": f"{time},{key}"}
    return Table(market, kind, pa.schema(fields, metadata=metadata), key, time)


TABLES: dict[tuple[str, str], Table] = {
    (market, kind): _table(market, kind, columns, key, time)
    for market, kind, columns, key, time in (
        ("spot", "klines", _KLINES, "open_time", "open_time"),
        ("um", "klines", _KLINES, "open_time", "open_time"),
        ("cm", "klines", _KLINES, "open_time", "open_time"),
        ("spot", "aggTrades", _AGG_SPOT, "agg_trade_id", "time"),
        ("um", "aggTrades", _AGG_FUTURES, "agg_trade_id", "time"),
        ("cm", "aggTrades", _AGG_FUTURES, "agg_trade_id", "time"),
        ("spot", "trades", _TRADES_SPOT, "id", "time"),
        ("um", "trades", _TRADES_UM, "id", "time"),
        ("cm", "trades", _TRADES_CM, "id", "time"),
    )
}
