-- The clean kind's tables in bfd's state store (clean_zips, clean_inputs, clean_partitions), as its last
-- migration (migrations/ beside this file) leaves them. The store applies this file
-- to a store that has none of them, after the core's schema.sql, in the registry's
-- order; an older store gets the migrations it lacks (a test checks both agree).

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
