-- The mail queue: one row per mail still to send (sent ones are deleted), sent by the one
-- holder of the lease `mail-sender`, apart from the event outbox. A password-reset mail has
-- no body here: its token is made when it is sent, so no usable token is ever stored.
CREATE TABLE mail_queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX mail_queue_due ON mail_queue (next_attempt_at, id) WHERE status = 'pending';

-- Reset notifications once carried their token in the outbox, kept after publishing.
UPDATE outbox SET payload = json_remove(payload, '$.token')
    WHERE topic = 'notifications' AND json_extract(payload, '$.token') IS NOT NULL;
