-- Large files are fetched as parallel byte ranges, each resumable on its own.
CREATE TABLE segments (
    file_id INTEGER NOT NULL REFERENCES files (id),
    idx     INTEGER NOT NULL CHECK (idx >= 0),
    start   INTEGER NOT NULL CHECK (start >= 0),
    stop    INTEGER NOT NULL CHECK (stop > start),
    done    INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
    PRIMARY KEY (file_id, idx)
) WITHOUT ROWID;
