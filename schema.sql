-- The state store of bfd: every table, index, trigger and CHECK.
-- A fresh database is created from this file; an older one is brought here by
-- the numbered migrations in daemon/migrations/ (a test checks both agree).
-- Times are INTEGER milliseconds since the Unix epoch. States must match the
-- StrEnums in daemon/machines/; a test checks that too.

CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
);

CREATE TABLE jobs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    -- One of the registry's kinds (daemon/registry.py): a job of a kind this bfd does not
    -- run is refused by name, never run.
    kind       TEXT    NOT NULL,
    state      TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN (
                   'queued', 'running', 'paused', 'awaiting_swap',
                   'completed', 'failed', 'cancelled')),
    -- Canonical JSON of the submitted parameters; submit compares it for idempotence.
    spec       TEXT    NOT NULL,
    dest       TEXT    NOT NULL,
    message    TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE batches (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    state      TEXT    NOT NULL DEFAULT 'planned' CHECK (state IN (
                   'planned', 'active', 'verifying', 'complete', 'archived', 'cancelled')),
    files      INTEGER NOT NULL DEFAULT 0 CHECK (files >= 0),
    bytes      INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    -- Where the batch went (filesystem id and mount point); empty until active.
    disk       TEXT    NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL,
    -- A shard of a scenes job: files counts its items, bytes the successes' content;
    -- failures is how many of its items failed, recorded when the shard was written.
    failures   INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    started_at INTEGER,
    UNIQUE (job_id, idx)
);

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

-- One item of a scenes job, registered from its input a chunk at a time, in input order.
CREATE TABLE scenes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    key         TEXT    NOT NULL,
    url         TEXT,
    -- The kept input columns, a JSON object; NULL when the job keeps none.
    meta        TEXT,
    state       TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN (
                    'pending', 'running', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    step        TEXT,
    error_class TEXT,
    error       TEXT,
    -- The shard the item was claimed into. It survives a crash, so an interrupted shard
    -- is rewritten whole with the same items; only retry clears it (a new shard).
    shard       INTEGER,
    -- Bytes of the item's content once done.
    size        INTEGER CHECK (size IS NULL OR size >= 0),
    finished_at INTEGER,
    updated_at  INTEGER NOT NULL,
    UNIQUE (job_id, key)
);

-- Claiming walks a job's pending items in id (input) order; failures group by state.
CREATE INDEX scenes_by_state ON scenes (job_id, state);
CREATE INDEX scenes_in_flight ON scenes (state) WHERE state = 'running';
-- The items of a shard not yet written: what resuming an interrupted shard claims.
CREATE INDEX scenes_unwritten ON scenes (job_id, shard)
    WHERE shard IS NOT NULL AND state IN ('pending', 'running');

-- How far a scenes job's input is registered. Each chunk's rows and this row's
-- progress commit together, so a restart resumes registering at rows_read.
CREATE TABLE scene_inputs (
    job_id          INTEGER PRIMARY KEY REFERENCES jobs (id),
    rows_total      INTEGER NOT NULL CHECK (rows_total >= 0),
    rows_read       INTEGER NOT NULL DEFAULT 0 CHECK (rows_read >= 0),
    done            INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
    -- Rows skipped and reported: no usable key, or a key an earlier row had (kept).
    rejected        INTEGER NOT NULL DEFAULT 0 CHECK (rejected >= 0),
    first_rejected  TEXT
);

-- Per job and state: how many items and their bytes, kept by triggers like file_counts.
CREATE TABLE scene_counts (
    job_id INTEGER NOT NULL,
    state  TEXT    NOT NULL,
    items  INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (job_id, state)
) WITHOUT ROWID;

CREATE TRIGGER scene_counts_insert AFTER INSERT ON scenes BEGIN
    INSERT INTO scene_counts (job_id, state, items, bytes)
    VALUES (NEW.job_id, NEW.state, 1, coalesce(NEW.size, 0))
    ON CONFLICT (job_id, state) DO UPDATE
        SET items = items + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER scene_counts_update AFTER UPDATE OF state, size ON scenes
WHEN OLD.state IS NOT NEW.state OR OLD.size IS NOT NEW.size BEGIN
    UPDATE scene_counts SET items = items - 1, bytes = bytes - coalesce(OLD.size, 0)
    WHERE job_id = OLD.job_id AND state = OLD.state;
    INSERT INTO scene_counts (job_id, state, items, bytes)
    VALUES (NEW.job_id, NEW.state, 1, coalesce(NEW.size, 0))
    ON CONFLICT (job_id, state) DO UPDATE
        SET items = items + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER scene_counts_delete AFTER DELETE ON scenes BEGIN
    UPDATE scene_counts SET items = items - 1, bytes = bytes - coalesce(OLD.size, 0)
    WHERE job_id = OLD.job_id AND state = OLD.state;
END;

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

-- One zip of a clean job, from its --input directory or its download job's verified files.
CREATE TABLE clean_zips (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        INTEGER NOT NULL REFERENCES jobs (id),
    -- Relative to the layout root (the --input directory or the download's dest).
    path          TEXT    NOT NULL,
    -- The output table it adds to: "market=…/kind=…/symbol=…[/interval=…]".
    series        TEXT    NOT NULL,
    first_day     TEXT    NOT NULL,
    last_day      TEXT    NOT NULL,
    -- What the file was when last seen: a change sends a done zip back to pending.
    size          INTEGER NOT NULL CHECK (size >= 0),
    mtime_ns      INTEGER NOT NULL,
    sha256        TEXT    CHECK (sha256 IS NULL OR length(sha256) = 64),
    state         TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN (
                      'pending', 'running', 'done', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    step          TEXT,
    error_class   TEXT,
    error         TEXT,
    -- Rows read and rejected (by reason, a JSON object) when it was last parsed.
    rows_in       INTEGER CHECK (rows_in IS NULL OR rows_in >= 0),
    rows_rejected INTEGER CHECK (rows_rejected IS NULL OR rows_rejected >= 0),
    finished_at   INTEGER,
    updated_at    INTEGER NOT NULL,
    UNIQUE (job_id, path)
);

CREATE INDEX clean_zips_by_state ON clean_zips (job_id, state);
CREATE INDEX clean_zips_by_series ON clean_zips (job_id, series);

-- What a clean job's input scan found besides its zips, for status and failures.
CREATE TABLE clean_inputs (
    job_id        INTEGER PRIMARY KEY REFERENCES jobs (id),
    -- Zips whose path is not in the Binance layout (or of a kind not cleaned).
    outside       INTEGER NOT NULL DEFAULT 0 CHECK (outside >= 0),
    first_outside TEXT    NOT NULL DEFAULT '',
    -- Zips left out by --kinds/--markets.
    filtered      INTEGER NOT NULL DEFAULT 0 CHECK (filtered >= 0),
    -- The highest download file id registered (--after): later ones are new.
    seen_file_id  INTEGER NOT NULL DEFAULT 0
);

-- A partition as last built under a destination: the digest of its source zips
-- (path and sha256) and its rows (0: no file, every source row fell elsewhere).
CREATE TABLE clean_partitions (
    dest   TEXT    NOT NULL,
    series TEXT    NOT NULL,
    day    TEXT    NOT NULL,
    digest TEXT    NOT NULL,
    rows   INTEGER NOT NULL CHECK (rows >= 0),
    PRIMARY KEY (dest, series, day)
) WITHOUT ROWID;

-- One part of one table of a generate job: rows [start_row, start_row + rows).
CREATE TABLE generate_parts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    table_name  TEXT    NOT NULL,
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    start_row   INTEGER NOT NULL CHECK (start_row >= 0),
    rows        INTEGER NOT NULL CHECK (rows > 0),
    state       TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN (
                    'pending', 'running', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    step        TEXT,
    error_class TEXT,
    error       TEXT,
    -- The part file once durable: its size and sha256.
    size        INTEGER CHECK (size IS NULL OR size >= 0),
    sha256      TEXT    CHECK (sha256 IS NULL OR length(sha256) = 64),
    finished_at INTEGER,
    updated_at  INTEGER NOT NULL,
    UNIQUE (job_id, table_name, idx)
);

CREATE INDEX generate_parts_by_state ON generate_parts (job_id, state);
