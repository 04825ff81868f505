-- Read models (projections) and their checkpoints.
CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE account_summaries (
    account_id       text PRIMARY KEY,
    owner_name       text NOT NULL,
    owner_id         text,
    balance          numeric(17, 2) NOT NULL,
    currency         text NOT NULL,
    status           text NOT NULL,
    version          integer NOT NULL,
    created_position bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX account_summaries_created ON account_summaries (created_position);
CREATE INDEX account_summaries_owner ON account_summaries (owner_id, created_position);

CREATE TABLE transactions (
    id            text PRIMARY KEY,
    account_id    text NOT NULL,
    type          text NOT NULL,
    amount        numeric(17, 2) NOT NULL,
    balance_after numeric(17, 2) NOT NULL,
    description   text,
    version       integer NOT NULL,
    transfer_id   text,
    position      bigint NOT NULL,
    occurred_at   timestamptz NOT NULL,
    CONSTRAINT transactions_account_version UNIQUE (account_id, version)
);
