-- The event store: events, snapshots, idempotency records and the outbox.
CREATE TABLE events (
    position    INTEGER PRIMARY KEY,
    stream_id   TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    event_id    TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    data        JSONTEXT NOT NULL,
    metadata    JSONTEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

CREATE TABLE snapshots (
    stream_id  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    state      JSONTEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (stream_id, version)
);

CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    topic          TEXT NOT NULL,
    key            TEXT NOT NULL,
    payload        JSONTEXT,
    event_position INTEGER,
    created_at     TIMESTAMPTZ NOT NULL,
    published_at   TIMESTAMPTZ
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
