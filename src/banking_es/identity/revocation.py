"""Every process's in-memory copy of the revocation list, so checking a token is free.

The truth is the `revocations` table (written in the transaction that ends a login). Each
process loads it at start and follows it: on PostgreSQL a LISTENing connection told by
`pg_notify` (and a slow safety poll), on SQLite a short poll, so another process may accept
a revoked access token for up to `SQLITE_POLL_S`. Revocations are pruned once every token
of their login has expired; the prune also calls `also_purge` (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from banking_es.application.ports import Clock
from banking_es.identity.users import REVOCATION_CHANNEL, UserRepository
from banking_es.tasks import cancel

log = logging.getLogger(__name__)

SQLITE_POLL_S = 0.2
POSTGRES_POLL_S = 5.0
PRUNE_EVERY_S = 600.0


class RevocationList:
    """Revoked login ids, followed from the database."""

    def __init__(
        self,
        users: UserRepository,
        clock: Clock,
        *,
        grace_s: float = 3600,
        also_purge: Callable[[datetime], Awaitable[None]] | None = None,
    ) -> None:
        self._users = users
        self._also_purge = also_purge
        self._clock = clock
        self._grace = timedelta(seconds=grace_s)
        self._revoked: dict[str, datetime | None] = {}  # login id -> when it may be forgotten
        self._seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None

    def is_revoked(self, login_id: str) -> bool:
        return login_id in self._revoked

    def add(self, login_ids: list[str]) -> None:
        for login_id in login_ids:
            self._revoked.setdefault(login_id, None)  # its row brings the expiry

    def __len__(self) -> int:
        return len(self._revoked)

    async def refresh(self) -> None:
        """Read the rows added since the last call."""
        cutoff = self._clock.now() - self._grace
        for seq, login_id, expires_at in await self._users.revocations_after(self._seq, cutoff):
            self._revoked[login_id] = expires_at + self._grace
            self._seq = max(self._seq, seq)

    async def prune(self) -> None:
        """Forget revocations whose tokens have all expired, here and in the table."""
        now = self._clock.now()
        for login_id, until in list(self._revoked.items()):
            if until is not None and until <= now:
                del self._revoked[login_id]
        await self._users.purge_revocations(now - self._grace)
        if self._also_purge is not None:
            await self._also_purge(now)

    async def start(self) -> None:
        if self._users.db.dialect == "postgres":
            await self._listen()  # here, not in the task: a cancelled connect leaks its socket
        await self.refresh()
        self._task = asyncio.create_task(self._follow(), name="revocations")

    async def _follow(self) -> None:
        postgres = self._users.db.dialect == "postgres"
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + PRUNE_EVERY_S
        while True:
            if postgres and self._listener is None:
                await self._listen()
            self._wake.clear()
            interval = POSTGRES_POLL_S if self._listener is not None else SQLITE_POLL_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            try:
                await self.refresh()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY_S
                    await self.prune()
            except Exception as exc:  # the database may be away; the next round retries
                log.warning("reading revocations failed: %s", exc)

    async def _listen(self) -> None:
        from banking_es.db.postgres import listen

        url = str(getattr(self._users.db, "url", ""))
        try:
            self._listener = await listen(url, REVOCATION_CHANNEL, self._notified, self._lost)
            await self.refresh()  # rows committed before LISTEN took effect
        except Exception as exc:
            log.warning("cannot LISTEN for revocations (polling instead): %s", exc)

    def _notified(self, _payload: str) -> None:
        self._wake.set()

    def _lost(self) -> None:
        self._listener = None
        self._wake.set()

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._listener is not None:
            from banking_es.db.postgres import close_quietly

            await close_quietly(self._listener)
            self._listener = None
