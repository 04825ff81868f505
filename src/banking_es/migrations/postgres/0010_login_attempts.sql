-- The login lock-out, keyed by the case-folded name as typed (known or not), instead of
-- columns of users (identity/lockout.py). `attempts` holds the checks reserved or failed
-- within the window; `expires_at` is when the row stops meaning anything (then purged).
-- `login_unlocks` records who ended a lock-out (`banking-es users unlock`).
CREATE TABLE login_attempts (
    name_key     text PRIMARY KEY,
    attempts     jsonb NOT NULL,
    locked_until timestamptz,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX login_attempts_expires ON login_attempts (expires_at);

CREATE TABLE login_unlocks (
    id           bigserial PRIMARY KEY,
    name_key     text NOT NULL,
    user_id      text REFERENCES users (id),
    locked_until timestamptz,
    unlocked_by  text NOT NULL,
    unlocked_at  timestamptz NOT NULL
);
CREATE INDEX login_unlocks_name ON login_unlocks (name_key, id);

-- Users locked now stay locked, under both of their names.
INSERT INTO login_attempts (name_key, attempts, locked_until, expires_at)
SELECT k, '[]', locked_until, locked_until
FROM users, LATERAL (VALUES (username_key), (email_key)) AS names (k)
WHERE locked_until IS NOT NULL;

-- users.failed_logins and users.locked_until stay (unused) while a server of the previous
-- release may still run against this database during a rolling upgrade; a later migration
-- drops them.
