-- Each kind owns its tables: a fragment (tables.sql) and migrations in its package, applied
-- by the store after the core's, in the registry's order, each recorded in kind_migrations.
-- The four kinds of this release had their tables made by the core's migrations 0001-0013,
-- exactly as their baselines (version 1) have them: recorded as applied, they are kept as
-- they are and never made again.
CREATE TABLE kind_migrations (
    kind       TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (kind, version)
) WITHOUT ROWID;
INSERT INTO kind_migrations (kind, version, name, applied_at)
    SELECT column1, 1, 'baseline', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM (VALUES ('download'), ('scenes'), ('clean'), ('generate'));
