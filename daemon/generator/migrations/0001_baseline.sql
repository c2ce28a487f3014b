-- Frozen: the tables as the core's migrations 0001-0013 left them, when the kind's
-- tables moved into its package. Never edit; add 0002_*.sql and change tables.sql.
-- The generate kind's tables in bfd's state store (generate_parts), as its last
-- migration (migrations/ beside this file) leaves them. The store applies this file
-- to a store that has none of them, after the core's schema.sql, in the registry's
-- order; an older store gets the migrations it lacks (a test checks both agree).

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
