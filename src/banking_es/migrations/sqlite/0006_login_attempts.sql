-- The login lock-out, keyed by the case-folded name as typed (known or not), instead of
-- columns of users (identity/lockout.py). `attempts` holds the checks reserved or failed
-- within the window; `expires_at` is when the row stops meaning anything (then purged).
-- `login_unlocks` records who ended a lock-out (`banking-es users unlock`).
CREATE TABLE login_attempts (
    name_key     TEXT PRIMARY KEY,
    attempts     JSONTEXT NOT NULL,
    locked_until TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_attempts_expires ON login_attempts (expires_at);

CREATE TABLE login_unlocks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name_key     TEXT NOT NULL,
    user_id      TEXT REFERENCES users (id),
    locked_until TIMESTAMPTZ,
    unlocked_by  TEXT NOT NULL,
    unlocked_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_unlocks_name ON login_unlocks (name_key, id);

-- Users locked now stay locked, under both of their names.
INSERT INTO login_attempts (name_key, attempts, locked_until, expires_at)
SELECT username_key, '[]', locked_until, locked_until FROM users WHERE locked_until IS NOT NULL
UNION ALL
SELECT email_key, '[]', locked_until, locked_until FROM users WHERE locked_until IS NOT NULL;

-- users.failed_logins and users.locked_until stay (unused) until a later migration: a
-- server of the previous release may still read them.
