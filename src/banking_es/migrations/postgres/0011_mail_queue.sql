-- The mail queue: one row per mail still to send (sent ones are deleted), sent by the one
-- holder of the lease `mail-sender`, apart from the event outbox. A password-reset mail has
-- no body here: its token is made when it is sent, so no usable token is ever stored.
CREATE TABLE mail_queue (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL,
    user_id         text NOT NULL,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body            text,
    status          text NOT NULL CHECK (status IN ('pending', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX mail_queue_due ON mail_queue (next_attempt_at, id) WHERE status = 'pending';

-- Reset notifications once carried their token in the outbox, kept after publishing.
UPDATE outbox SET payload = payload - 'token'
    WHERE topic = 'notifications' AND payload ? 'token';
