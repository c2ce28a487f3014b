"""The cleaner: Binance zips into partitioned, deduplicated Parquet (not yet a job kind)."""
