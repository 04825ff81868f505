-- Kafka consumers: checkpoints per (projection, partition), the last version of each stream
-- a consumer applied (duplicate and gap detection), and the dead letters.
CREATE TABLE kafka_checkpoints (
    projection       text NOT NULL,
    topic            text NOT NULL,
    partition        integer NOT NULL,
    "offset"         bigint NOT NULL,
    last_recorded_at timestamptz,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);

CREATE TABLE kafka_stream_versions (
    consumer  text NOT NULL,
    stream_id text NOT NULL,
    version   integer NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);

CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         text NOT NULL,
    value       text NOT NULL,
    headers     jsonb NOT NULL,
    error       text NOT NULL,
    attempts    integer NOT NULL,
    status      text NOT NULL CHECK (status IN ('open', 'retried', 'discarded')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX dead_letters_open ON dead_letters (consumer, key, id) WHERE status = 'open';
