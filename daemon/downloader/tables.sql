-- The download kind's tables in bfd's state store (files, segments, file_counts), as its last
-- migration (migrations/ beside this file) leaves them. The store applies this file
-- to a store that has none of them, after the core's schema.sql, in the registry's
-- order; an older store gets the migrations it lacks (a test checks both agree).

CREATE TABLE files (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    batch_idx   INTEGER NOT NULL DEFAULT 0,
    url         TEXT    NOT NULL,
    -- Relative to the job's dest, already checked not to escape it.
    path        TEXT    NOT NULL,
    size        INTEGER CHECK (size IS NULL OR size >= 0),
    sha256      TEXT    CHECK (sha256 IS NULL OR length(sha256) = 64),
    md5         TEXT    CHECK (md5 IS NULL OR length(md5) = 32),
    etag        TEXT,
    -- The ETag or Last-Modified the origin gave; a resumed transfer sends it as If-Range.
    validator   TEXT,
    state       TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN (
                    'pending', 'downloading', 'verifying', 'done', 'failed', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a failed file may be retried automatically; NULL: only `bfctl retry` will.
    retry_at    INTEGER,
    step        TEXT,
    error_class TEXT,
    error       TEXT,
    finished_at INTEGER,
    updated_at  INTEGER NOT NULL,
    -- A sidecar with the file's sha256 (`sha256sum` format), fetched before verifying.
    checksum_url TEXT,
    -- The sha256 bfd computed of the bytes it installed, whatever the manifest gave (or
    -- none): batch manifests carry it and `bfctl verify` checks it.
    seen_sha256 TEXT CHECK (seen_sha256 IS NULL OR length(seen_sha256) = 64),
    UNIQUE (job_id, path)
);

-- Failures, retries and counts of a job by state.
CREATE INDEX files_by_state ON files (job_id, state);
-- Claiming walks the pending files of a job's active batch, in id order.
CREATE INDEX files_by_batch ON files (job_id, batch_idx, state);
-- Failed files due for an automatic retry; permanent failures are not in it.
CREATE INDEX files_retry_due ON files (job_id, retry_at)
    WHERE state = 'failed' AND retry_at IS NOT NULL;
-- Boot repair finds what a crash left in flight without scanning every file.
CREATE INDEX files_in_flight ON files (state) WHERE state IN ('downloading', 'verifying');
-- Whether a download's bytes_total is a total: the files whose size nobody knows yet.
CREATE INDEX files_unknown_size ON files (job_id) WHERE size IS NULL;
-- Files a crash or a pause interrupted: their bytes already on the disk count for them.
CREATE INDEX files_interrupted ON files (job_id) WHERE state = 'pending' AND validator IS NOT NULL;

-- The byte ranges of a large file fetched in parallel; a range is done only once its
-- bytes are fsynced, so a resumed transfer fetches exactly the ranges not done.
CREATE TABLE segments (
    file_id INTEGER NOT NULL REFERENCES files (id),
    idx     INTEGER NOT NULL CHECK (idx >= 0),
    start   INTEGER NOT NULL CHECK (start >= 0),
    stop    INTEGER NOT NULL CHECK (stop > start),
    done    INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
    PRIMARY KEY (file_id, idx)
) WITHOUT ROWID;

-- Per job and state: how many files and their known bytes. Kept by triggers in
-- the same transaction as every change, so `status` never counts millions of rows.
CREATE TABLE file_counts (
    job_id INTEGER NOT NULL,
    state  TEXT    NOT NULL,
    files  INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (job_id, state)
) WITHOUT ROWID;

CREATE TRIGGER file_counts_insert AFTER INSERT ON files BEGIN
    INSERT INTO file_counts (job_id, state, files, bytes)
    VALUES (NEW.job_id, NEW.state, 1, coalesce(NEW.size, 0))
    ON CONFLICT (job_id, state) DO UPDATE
        SET files = files + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER file_counts_update AFTER UPDATE OF state, size ON files
WHEN OLD.state IS NOT NEW.state OR OLD.size IS NOT NEW.size BEGIN
    UPDATE file_counts SET files = files - 1, bytes = bytes - coalesce(OLD.size, 0)
    WHERE job_id = OLD.job_id AND state = OLD.state;
    INSERT INTO file_counts (job_id, state, files, bytes)
    VALUES (NEW.job_id, NEW.state, 1, coalesce(NEW.size, 0))
    ON CONFLICT (job_id, state) DO UPDATE
        SET files = files + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER file_counts_delete AFTER DELETE ON files BEGIN
    UPDATE file_counts SET files = files - 1, bytes = bytes - coalesce(OLD.size, 0)
    WHERE job_id = OLD.job_id AND state = OLD.state;
END;
