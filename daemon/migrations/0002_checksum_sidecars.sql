-- Files may name a checksum sidecar (Binance's X.zip.CHECKSUM) to verify against.
ALTER TABLE files ADD COLUMN checksum_url TEXT;
