-- Frozen: the tables as the core's migrations 0001-0013 left them, when the kind's
-- tables moved into its package. Never edit; add 0002_*.sql and change tables.sql.
-- The scenes kind's tables in bfd's state store (scenes, scene_inputs, scene_counts), as its last
-- migration (migrations/ beside this file) leaves them. The store applies this file
-- to a store that has none of them, after the core's schema.sql, in the registry's
-- order; an older store gets the migrations it lacks (a test checks both agree).

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
