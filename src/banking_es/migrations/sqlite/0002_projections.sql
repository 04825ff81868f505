-- Read models (projections) and their checkpoints.
CREATE TABLE projection_checkpoints (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE account_summaries (
    account_id       TEXT PRIMARY KEY,
    owner_name       TEXT NOT NULL,
    owner_id         TEXT,
    balance          DECTEXT NOT NULL,
    currency         TEXT NOT NULL,
    status           TEXT NOT NULL,
    version          INTEGER NOT NULL,
    created_position INTEGER NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX account_summaries_created ON account_summaries (created_position);
CREATE INDEX account_summaries_owner ON account_summaries (owner_id, created_position);

CREATE TABLE transactions (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    type          TEXT NOT NULL,
    amount        DECTEXT NOT NULL,
    balance_after DECTEXT NOT NULL,
    description   TEXT,
    version       INTEGER NOT NULL,
    transfer_id   TEXT,
    position      INTEGER NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT transactions_account_version UNIQUE (account_id, version)
);
