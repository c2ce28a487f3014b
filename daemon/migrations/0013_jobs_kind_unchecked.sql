-- The registry owns the set of kinds, not the schema: jobs.kind loses its CHECK, so a new
-- kind needs no rebuild of jobs, the parent of every foreign key. This is that rebuild,
-- the last one. The store runs it as SQLite's 12-step procedure: foreign keys off, one
-- transaction, PRAGMA foreign_key_check before the commit. jobs is copied aside, created
-- again as schema.sql has it and filled back, its ids kept; DROP TABLE forgets the
-- AUTOINCREMENT high-water mark, so it is carried across too (an id is never reused).
-- jobs has no index of its own but its UNIQUE name's, and no trigger.
CREATE TEMP TABLE old_jobs AS SELECT * FROM main.jobs;
CREATE TEMP TABLE old_jobs_sequence AS
    SELECT seq FROM main.sqlite_sequence WHERE name = 'jobs';
DROP TABLE main.jobs;
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
INSERT INTO main.jobs SELECT * FROM temp.old_jobs;
DELETE FROM main.sqlite_sequence WHERE name = 'jobs';
INSERT INTO main.sqlite_sequence (name, seq) SELECT 'jobs', seq FROM temp.old_jobs_sequence;
DROP TABLE temp.old_jobs;
DROP TABLE temp.old_jobs_sequence;
