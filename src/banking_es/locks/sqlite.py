"""Locks on SQLite (one machine): a row per held lock in `locks`, taken, extended and given
back inside SQLite's write transaction, which serializes them across the processes sharing
the file. A lock whose `expires_at` has passed is free; the machine's one clock judges it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from banking_es.db.base import Database


@dataclass(frozen=True, slots=True)
class SqliteHandle:
    name: str
    token: str
    ttl: float


class SqliteLocks:
    """The SQLite `Backend`, on the service's own database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self, name: str, ttl: float) -> SqliteHandle:
        return SqliteHandle(name, uuid.uuid4().hex, ttl)

    async def try_acquire(self, handle: SqliteHandle) -> bool:
        now = datetime.now(UTC)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO locks (name, token, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
                " expires_at = excluded.expires_at WHERE locks.expires_at <= $4",
                handle.name,
                handle.token,
                now + timedelta(seconds=handle.ttl),
                now,
            )
            holder = await conn.fetchval("SELECT token FROM locks WHERE name = $1", handle.name)
        return bool(holder == handle.token)

    async def extend(self, handle: SqliteHandle) -> bool:
        expires = datetime.now(UTC) + timedelta(seconds=handle.ttl)
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "UPDATE locks SET expires_at = $3 WHERE name = $1 AND token = $2 RETURNING name",
                handle.name,
                handle.token,
                expires,
            )
        return bool(rows)

    async def release(self, handle: SqliteHandle) -> bool:
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM locks WHERE name = $1 AND token = $2 RETURNING name",
                handle.name,
                handle.token,
            )
        return bool(rows)

    async def discard(self, handle: SqliteHandle) -> None:
        return None

    async def close(self) -> None:
        return None
