-- Kafka consumers: checkpoints per (projection, partition), the last version of each stream
-- a consumer applied (duplicate and gap detection), and the dead letters.
CREATE TABLE kafka_checkpoints (
    projection       TEXT NOT NULL,
    topic            TEXT NOT NULL,
    partition        INTEGER NOT NULL,
    "offset"         INTEGER NOT NULL,
    last_recorded_at TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);

CREATE TABLE kafka_stream_versions (
    consumer  TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    headers     JSONTEXT NOT NULL,
    error       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'retried', 'discarded')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX dead_letters_open ON dead_letters (consumer, key, id) WHERE status = 'open';
