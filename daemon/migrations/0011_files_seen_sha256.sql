-- The sha256 bfd computed of each file's bytes as they were written, whatever checksum its
-- manifest gave (or none): batch manifests carry it and `bfctl verify` checks it.
ALTER TABLE files ADD COLUMN seen_sha256 TEXT CHECK (seen_sha256 IS NULL OR length(seen_sha256) = 64);
