"""The identity tables (migration 0003) behind small typed functions, on both backends.

Usernames and emails are unique without regard to case: the `*_key` columns hold the
case-folded forms under a unique constraint, so the database decides, not a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from banking_es.db.base import Connection, Database, Row

ROLES = ("customer", "auditor", "admin")
_USER_COLUMNS = "id, username, email, password_hash, roles, created_at"


@dataclass(frozen=True, slots=True)
class User:
    """A stored user."""

    id: str
    username: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    created_at: datetime

    @property
    def name_keys(self) -> tuple[str, str]:
        """The lock-out keys of the names it logs in with."""
        return key(self.username), key(self.email)


@dataclass(frozen=True, slots=True)
class Login:
    """One sign-in: the refresh token that is live for it now, and whether it ended."""

    id: str
    user_id: str
    refresh_jti: str
    expires_at: datetime
    revoked_at: datetime | None


def key(text: str) -> str:
    return text.casefold()


def encode_roles(roles: tuple[str, ...] | list[str]) -> str:
    return ",".join(sorted(set(roles), key=ROLES.index))


def _user(row: Row) -> User:
    return User(
        row["id"],
        row["username"],
        row["email"],
        row["password_hash"],
        tuple(r for r in str(row["roles"]).split(",") if r),
        row["created_at"],
    )


class UserRepository:
    """Reads and writes users, logins, revocations, reset tokens and role changes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def by_id(self, user_id: str, conn: Connection | None = None) -> User | None:
        row = await (conn or self.db).fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id
        )
        return _user(row) if row else None

    async def by_login_name(self, name: str) -> User | None:
        """By username or email, ignoring case."""
        row = await self.db.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username_key = $1 OR email_key = $1",
            key(name),
        )
        return _user(row) if row else None

    async def by_email(self, email: str) -> User | None:
        row = await self.db.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE email_key = $1", key(email)
        )
        return _user(row) if row else None

    async def page(self, after: str | None, limit: int) -> list[User]:
        rows = await self.db.fetch(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2",
            after or "",
            limit,
        )
        return [_user(r) for r in rows]

    async def insert(self, conn: Connection, user: User) -> None:
        await conn.execute(
            "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
            " roles, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            user.id,
            user.username,
            key(user.username),
            user.email,
            key(user.email),
            user.password_hash,
            encode_roles(user.roles),
            user.created_at,
        )

    async def set_password(self, conn: Connection, user_id: str, hashed: str, at: datetime) -> None:
        await conn.execute(
            "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1",
            user_id,
            hashed,
            at,
        )

    async def set_roles(
        self, conn: Connection, user_id: str, old: str, new: str, by: str, at: datetime
    ) -> None:
        await conn.execute(
            "UPDATE users SET roles = $2, updated_at = $3 WHERE id = $1", user_id, new, at
        )
        await conn.execute(
            "INSERT INTO role_changes (user_id, old_roles, new_roles, changed_by, changed_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            user_id,
            old,
            new,
            by,
            at,
        )

    async def role_changes(self, user_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT old_roles, new_roles, changed_by, changed_at FROM role_changes"
            " WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        return [dict(r) for r in rows]

    # ---- logins and revocations ----------------------------------------------------------

    async def insert_login(self, conn: Connection, login: Login, at: datetime) -> None:
        await conn.execute(
            "INSERT INTO logins (id, user_id, refresh_jti, created_at, refreshed_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $4, $5)",
            login.id,
            login.user_id,
            login.refresh_jti,
            at,
            login.expires_at,
        )

    async def rotate_refresh(
        self,
        conn: Connection,
        login_id: str,
        old_jti: str,
        new_jti: str,
        expires: datetime,
        at: datetime,
    ) -> bool:
        """Swap the live refresh token if `old_jti` is still it; False if it is dead."""
        row = await conn.fetchrow(
            "UPDATE logins SET refresh_jti = $3, refreshed_at = $5, expires_at = $4"
            " WHERE id = $1 AND refresh_jti = $2 AND revoked_at IS NULL AND expires_at > $5"
            " RETURNING id",
            login_id,
            old_jti,
            new_jti,
            expires,
            at,
        )
        return row is not None

    async def revoke_logins(
        self,
        conn: Connection,
        at: datetime,
        reason: str,
        *,
        login_id: str | None = None,
        user_id: str | None = None,
        keep: str | None = None,
    ) -> list[str]:
        """End one login, or every live login of a user (but `keep`); return the ids ended."""
        if login_id is not None:
            rows = await conn.fetch(
                "UPDATE logins SET revoked_at = $2, revoked_reason = $3"
                " WHERE id = $1 AND revoked_at IS NULL RETURNING id, expires_at",
                login_id,
                at,
                reason,
            )
        else:
            rows = await conn.fetch(
                "UPDATE logins SET revoked_at = $2, revoked_reason = $3"
                " WHERE user_id = $1 AND revoked_at IS NULL AND id <> $4 AND expires_at > $2"
                " RETURNING id, expires_at",
                user_id,
                at,
                reason,
                keep or "",
            )
        if rows:
            await conn.executemany(
                "INSERT INTO revocations (login_id, expires_at, revoked_at) VALUES ($1, $2, $3)",
                [(r["id"], r["expires_at"], at) for r in rows],
            )
            if self.db.dialect == "postgres":
                await conn.execute("SELECT pg_notify($1, '')", REVOCATION_CHANNEL)
        return [str(r["id"]) for r in rows]

    async def revocations_after(
        self, seq: int, expired_before: datetime
    ) -> list[tuple[int, str, datetime]]:
        rows = await self.db.fetch(
            "SELECT seq, login_id, expires_at FROM revocations"
            " WHERE seq > $1 AND expires_at > $2 ORDER BY seq",
            seq,
            expired_before,
        )
        return [(int(r["seq"]), str(r["login_id"]), r["expires_at"]) for r in rows]

    async def purge_revocations(self, expired_before: datetime) -> None:
        await self.db.execute("DELETE FROM revocations WHERE expires_at <= $1", expired_before)

    # ---- password resets -----------------------------------------------------------------

    async def insert_reset(
        self, conn: Connection, token_hash: str, user_id: str, at: datetime, expires: datetime
    ) -> None:
        await conn.execute(
            "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4)",
            token_hash,
            user_id,
            at,
            expires,
        )

    async def use_reset(self, conn: Connection, token_hash: str, at: datetime) -> str | None:
        """Mark a live reset token used; its user id, or None if unknown, used or expired."""
        row = await conn.fetchrow(
            "UPDATE password_resets SET used_at = $2"
            " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id",
            token_hash,
            at,
        )
        return str(row["user_id"]) if row else None

    async def insert_notification(
        self, conn: Connection, topic: str, key_: str, payload: dict[str, Any], at: datetime
    ) -> None:
        """An outbox row in the caller's transaction (the relay delivers it)."""
        await conn.execute(
            "INSERT INTO outbox (topic, key, payload, event_position, created_at)"
            " VALUES ($1, $2, $3, NULL, $4)",
            topic,
            key_,
            payload,
            at,
        )


REVOCATION_CHANNEL = "banking_es_revocations"
