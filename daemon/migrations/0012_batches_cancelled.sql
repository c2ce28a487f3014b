-- A cancelled job's batches and shards end with it: 'cancelled' joins the batch states, so
-- no batch of a job that will never go on says 'active' (or 'planned', or 'verifying').
-- SQLite cannot change a CHECK: the table is copied aside, created again as schema.sql
-- has it and filled back, its ids kept; the foreign keys are checked at commit. Dropping
-- the table drops its AUTOINCREMENT counter too: it is put back, so the id of a batch
-- deleted before this step is never given again.
PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE old_batches_sequence AS
    SELECT seq FROM main.sqlite_sequence WHERE name = 'batches';
CREATE TEMP TABLE old_batches AS SELECT * FROM main.batches;
DROP TABLE main.batches;
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
INSERT INTO main.batches SELECT * FROM temp.old_batches;
DROP TABLE temp.old_batches;
DELETE FROM main.sqlite_sequence WHERE name = 'batches';
INSERT INTO main.sqlite_sequence (name, seq)
    SELECT 'batches', max(
        coalesce((SELECT max(seq) FROM temp.old_batches_sequence), 0),
        coalesce((SELECT max(id) FROM main.batches), 0));
DROP TABLE temp.old_batches_sequence;

-- Jobs cancelled before this step: their unfinished batches end now.
UPDATE batches SET state = 'cancelled'
WHERE state IN ('planned', 'active', 'verifying')
  AND job_id IN (SELECT id FROM jobs WHERE state = 'cancelled');
