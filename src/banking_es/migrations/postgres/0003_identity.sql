-- Identity: users, logins (one per sign-in, carrying the live refresh token),
-- revocations (read by every process), password reset tokens and the role change log.
CREATE TABLE users (
    id             text PRIMARY KEY,
    username       text NOT NULL,
    username_key   text NOT NULL UNIQUE,
    email          text NOT NULL,
    email_key      text NOT NULL UNIQUE,
    password_hash  text NOT NULL,
    roles          text NOT NULL,
    failed_logins  integer NOT NULL DEFAULT 0,
    locked_until   timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE TABLE logins (
    id             text PRIMARY KEY,
    user_id        text NOT NULL REFERENCES users (id),
    refresh_jti    text NOT NULL,
    created_at     timestamptz NOT NULL,
    refreshed_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX logins_user ON logins (user_id);

CREATE TABLE revocations (
    seq        bigserial PRIMARY KEY,
    login_id   text NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL
);
CREATE INDEX revocations_expires ON revocations (expires_at);

CREATE TABLE password_resets (
    token_hash text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

CREATE TABLE role_changes (
    id         bigserial PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id),
    old_roles  text NOT NULL,
    new_roles  text NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL
);
CREATE INDEX role_changes_user ON role_changes (user_id, id);
