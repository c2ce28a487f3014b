-- Ids are never reused: every table whose rows a removal deletes gets AUTOINCREMENT, so a
-- new row never takes the id of a deleted one (what bfd kept in memory under the old id,
-- or a log line naming it, can never be taken for the new row's).
-- SQLite cannot add AUTOINCREMENT to a table: each is copied aside, dropped, created
-- again as schema.sql has it, filled back (its ids kept) and given its indexes and
-- triggers again. The foreign keys into the tables are checked at commit, once every
-- row is back.
PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE old_jobs AS SELECT * FROM main.jobs;
DROP TABLE main.jobs;
CREATE TABLE jobs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    kind       TEXT    NOT NULL CHECK (kind IN ('download', 'scenes', 'clean', 'generate')),
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
INSERT INTO main.jobs SELECT * FROM temp.old_jobs;
DROP TABLE temp.old_jobs;

CREATE TEMP TABLE old_batches AS SELECT * FROM main.batches;
DROP TABLE main.batches;
CREATE TABLE batches (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    state      TEXT    NOT NULL DEFAULT 'planned' CHECK (state IN (
                   'planned', 'active', 'verifying', 'complete', 'archived')),
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
INSERT INTO main.batches SELECT * FROM temp.old_batches;
DROP TABLE temp.old_batches;

CREATE TEMP TABLE old_files AS SELECT * FROM main.files;
DROP TABLE main.files;
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
    UNIQUE (job_id, path)
);
INSERT INTO main.files SELECT * FROM temp.old_files;
DROP TABLE temp.old_files;
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

CREATE TEMP TABLE old_scenes AS SELECT * FROM main.scenes;
DROP TABLE main.scenes;
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
INSERT INTO main.scenes SELECT * FROM temp.old_scenes;
DROP TABLE temp.old_scenes;
-- Claiming walks a job's pending items in id (input) order; failures group by state.
CREATE INDEX scenes_by_state ON scenes (job_id, state);
CREATE INDEX scenes_in_flight ON scenes (state) WHERE state = 'running';
-- The items of a shard not yet written: what resuming an interrupted shard claims.
CREATE INDEX scenes_unwritten ON scenes (job_id, shard)
    WHERE shard IS NOT NULL AND state IN ('pending', 'running');
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

CREATE TEMP TABLE old_clean_zips AS SELECT * FROM main.clean_zips;
DROP TABLE main.clean_zips;
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
INSERT INTO main.clean_zips SELECT * FROM temp.old_clean_zips;
DROP TABLE temp.old_clean_zips;
CREATE INDEX clean_zips_by_state ON clean_zips (job_id, state);
CREATE INDEX clean_zips_by_series ON clean_zips (job_id, series);

CREATE TEMP TABLE old_generate_parts AS SELECT * FROM main.generate_parts;
DROP TABLE main.generate_parts;
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
INSERT INTO main.generate_parts SELECT * FROM temp.old_generate_parts;
DROP TABLE temp.old_generate_parts;
CREATE INDEX generate_parts_by_state ON generate_parts (job_id, state);
