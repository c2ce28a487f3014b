-- The state store of bfd: the core's tables (the ledgers, jobs, their batches), every
-- index, trigger and CHECK of them. A kind's own tables are in its package (tables.sql,
-- its migrations/ beside it), applied after these in the registry's order.
-- A fresh database is created from this file; an older one is brought here by
-- the numbered migrations in daemon/migrations/ (a test checks both agree).
-- Times are INTEGER milliseconds since the Unix epoch. States must match the
-- StrEnums of the machines; a test checks that too.

CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
);

-- How far each kind's tables are: every migration of its package applied (version 1
-- is its baseline), recorded in the transaction that applied it.
CREATE TABLE kind_migrations (
    kind       TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (kind, version)
) WITHOUT ROWID;

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
