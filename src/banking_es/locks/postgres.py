"""Locks on PostgreSQL: session advisory locks, each on a connection of its own for as long
as it is held (pooled connections keep no session state, see db/postgres.py). The lock ends
with its session, so a crashed holder's lock goes when its connection does; a holder that is
merely paused keeps it, which is why writes are fenced by shard epochs, not by locks.
A transaction-pooling PgBouncer breaks session locks: behind one, use Redis (`REDIS_URL`)."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import asyncpg

from banking_es.db.postgres import normalize_url

#: Keys of these locks have this high 16-bit tag, apart from the store's own advisory keys.
KEY_TAG = 0x6C6B


def lock_key(name: str) -> int:
    """A stable 64-bit advisory key for `name`."""
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=6).digest(), "big")
    return (KEY_TAG << 48) | digest  # below 2**63: the tag's top bit is clear


@dataclass(slots=True)
class PgHandle:
    key: int
    conn: asyncpg.Connection


class PostgresLocks:
    """The PostgreSQL `Backend`."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = normalize_url(url)
        self.connect_timeout = connect_timeout

    async def open(self, name: str, ttl: float) -> PgHandle:
        conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
        return PgHandle(lock_key(name), conn)

    async def try_acquire(self, handle: PgHandle) -> bool:
        return bool(await handle.conn.fetchval("SELECT pg_try_advisory_lock($1)", handle.key))

    async def extend(self, handle: PgHandle) -> bool:
        # A session lock lasts while its session does: check that the session still holds it.
        try:
            return bool(
                await handle.conn.fetchval(
                    "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory'"
                    " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
                    " AND ((classid::bigint << 32) | objid::bigint) = $1",
                    handle.key,
                )
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return False

    async def release(self, handle: PgHandle) -> bool:
        try:
            return bool(await handle.conn.fetchval("SELECT pg_advisory_unlock($1)", handle.key))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return False  # the session is gone, and its lock with it

    async def discard(self, handle: PgHandle) -> None:
        with contextlib.suppress(Exception):
            await handle.conn.close(timeout=2)
        if not handle.conn.is_closed():
            handle.conn.terminate()

    async def close(self) -> None:
        return None
