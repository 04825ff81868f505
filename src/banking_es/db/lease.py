"""Leader election with a lease row (table `leases`), on PostgreSQL and SQLite alike.

One process holds the lease `name` until `expires_at`; it renews it well before then.
Another process takes it over only once it has expired, so when the leader dies its
work stops for at most `ttl` seconds. A holder that cannot renew in time (the database
is away) considers itself no longer leader before the lease can expire (`margin`), so
two processes never both believe they lead.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from banking_es.application.ports import Clock
from banking_es.db.base import Database

log = logging.getLogger(__name__)

_TAKE = (
    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
    " expires_at = excluded.expires_at"
    " WHERE leases.expires_at < $4 OR leases.holder = excluded.holder"
)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseElection:
    """Holds the lease `name` for `holder` (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        name: str,
        clock: Clock,
        *,
        holder: str | None = None,
        ttl: float = 10.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._db = db
        self.name = name
        self.holder = holder or default_holder()
        self._clock = clock
        self._ttl = ttl
        self._margin = ttl / 3
        self._valid_until = 0.0
        #: A stand-by asks again only this often (each attempt is a write transaction).
        self.standby_poll = min(1.0, ttl / 3)
        self._next_try = 0.0
        #: Told True / False when this process becomes / stops being the leader (metrics).
        self.on_change = on_change
        self._reported = False

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    async def ensure(self) -> bool:
        """Take or renew the lease when due; True while this process is the leader."""
        held = await self._ensure()
        if held != self._reported and self.on_change is not None:
            self.on_change(held)
        self._reported = held
        return held

    async def _ensure(self) -> bool:
        now_mono = time.monotonic()
        if now_mono < self._valid_until - self._ttl / 3:
            return True  # renewed recently enough
        if not self.is_leader and now_mono < self._next_try:
            return False  # a stand-by: the leader's lease was valid a moment ago
        self._next_try = now_mono + self.standby_poll
        now = self._clock.now()
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    _TAKE, self.name, self.holder, now + timedelta(seconds=self._ttl), now
                )
                holder = await conn.fetchval("SELECT holder FROM leases WHERE name = $1", self.name)
        except Exception as exc:
            log.warning("lease %s: cannot take or renew (%s)", self.name, exc)
            return self.is_leader
        was_leader = self.is_leader
        if holder == self.holder:
            # Count validity from before the statement ran, minus a margin for clock drift.
            self._valid_until = now_mono + self._ttl - self._margin
            if not was_leader:
                log.info("lease %s: %s is now the leader", self.name, self.holder)
            return True
        if was_leader:
            log.warning("lease %s: lost to %s", self.name, holder)
        self._valid_until = 0.0
        return False

    async def release(self) -> None:
        """Give the lease up now, so a stand-by takes over without waiting for it to expire."""
        self._valid_until = 0.0
        if self._reported and self.on_change is not None:
            self.on_change(False)
        self._reported = False
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    "DELETE FROM leases WHERE name = $1 AND holder = $2", self.name, self.holder
                )
        except Exception as exc:
            log.warning("lease %s: cannot release (%s)", self.name, exc)


async def lease_holders(db: Database, clock: Clock) -> dict[str, str]:
    """The holder of each lease not yet expired (lease name -> holder), as any process sees."""
    rows = await db.fetch("SELECT name, holder FROM leases WHERE expires_at >= $1", clock.now())
    return {r["name"]: r["holder"] for r in rows}
