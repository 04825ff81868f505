-- Shards and locks on one machine (docs/architecture.md, "Many instances"): the shard count
-- fixed for the life of the database, a lease per shard whose epoch grows by one with every
-- new owner, the instances seen, and the named locks of the lock manager (locks/sqlite.py).
CREATE TABLE shard_config (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    shard_count INTEGER NOT NULL CHECK (shard_count > 0)
);

CREATE TABLE shard_leases (
    shard       INTEGER PRIMARY KEY CHECK (shard >= 0),
    owner       TEXT,
    epoch       INTEGER NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ,
    handover_to TEXT,
    load        REAL NOT NULL DEFAULT 0
);

CREATE TABLE cluster_instances (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL
);

CREATE TABLE locks (
    name       TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
