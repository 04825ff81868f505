"""The login lock-out: its rules (`NameState`) and its table (`LoginAttempts`, both backends).

The key is a case-folded login name as typed, known or not. A password check is reserved
in the key's row before it runs: at most `max_attempts` checks are reserved or failed within
the sliding window, whatever the concurrency; the failure that makes `max_attempts` locks
the key until it + window. A success ends the count; so does the end of the lock. The row is
taken under its row lock (PostgreSQL) or the write lock (SQLite), one transaction per step.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from banking_es.db.base import Connection, Database


@dataclass(frozen=True, slots=True)
class Attempt:
    """One reserved password check; `failed` once it answered "wrong password"."""

    ticket: str
    at: datetime
    failed: bool


@dataclass(frozen=True, slots=True)
class NameState:
    """The recent attempts on one key and its lock (pure: the table stores it)."""

    attempts: tuple[Attempt, ...] = ()
    locked_until: datetime | None = None

    def current(self, now: datetime, window: timedelta) -> NameState:
        """Without what ended: the lock and its count once the lock is over, old attempts."""
        if self.locked_until is not None and self.locked_until <= now:
            return NameState()
        cutoff = now - window
        return replace(self, attempts=tuple(a for a in self.attempts if a.at > cutoff))

    def wait(self, now: datetime, max_attempts: int, window: timedelta) -> int | None:
        """Seconds until a check may run (None: now); the state must be `current`."""
        if self.locked_until is not None:
            return _seconds(self.locked_until - now)
        if len(self.attempts) >= max_attempts:  # checks in flight fill the window
            return _seconds(min(a.at for a in self.attempts) + window - now)
        return None

    def reserved(self, ticket: str, now: datetime) -> NameState:
        return replace(self, attempts=(*self.attempts, Attempt(ticket, now, failed=False)))

    def failed(self, ticket: str, now: datetime, max_attempts: int, window: timedelta) -> NameState:
        """The check `ticket` failed now; at the `max_attempts`-th failure the key locks."""
        others = tuple(a for a in self.attempts if a.ticket != ticket)
        state = replace(self, attempts=(*others, Attempt(ticket, now, failed=True)))
        failures = sum(a.failed for a in state.attempts)
        if state.locked_until is None and failures >= max_attempts:
            state = replace(state, locked_until=now + window)
        return state

    def succeeded(self, ticket: str) -> NameState:
        """The count starts again; checks still in flight keep their reservations."""
        return NameState(tuple(a for a in self.attempts if not a.failed and a.ticket != ticket))

    def expires_at(self, window: timedelta) -> datetime | None:
        """When the row stops meaning anything (None: it means nothing now)."""
        ends = [a.at + window for a in self.attempts]
        if self.locked_until is not None:
            ends.append(self.locked_until)
        return max(ends, default=None)


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def new_ticket() -> str:
    return secrets.token_hex(8)


def _encode(state: NameState) -> list[list[Any]]:
    return [[a.ticket, a.at.isoformat(), a.failed] for a in state.attempts]


def _decode(attempts: list[list[Any]], locked_until: datetime | None) -> NameState:
    return NameState(
        tuple(Attempt(t, datetime.fromisoformat(at), bool(f)) for t, at, f in attempts),
        locked_until,
    )


class LoginAttempts:
    """The `login_attempts` table: reserve, settle and release checks per key."""

    def __init__(self, db: Database, max_attempts: int, window: timedelta) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.window = window

    async def reserve(self, keys: Iterable[str], ticket: str, now: datetime) -> int | None:
        """Reserve a check on every key, or on none: None, or the seconds to wait."""
        async with self.db.transaction() as conn:
            states = {k: await self._take(conn, k, now) for k in sorted(set(keys))}
            waits = [
                w
                for s in states.values()
                if (w := s.wait(now, self.max_attempts, self.window)) is not None
            ]
            if waits:
                return max(waits)
            for k, state in states.items():
                await self._put(conn, k, state.reserved(ticket, now))
        return None

    async def fail(
        self,
        keys: Iterable[str],
        ticket: str,
        now: datetime,
        on_lock: Callable[[Connection, datetime], Awaitable[None]] | None = None,
    ) -> list[str]:
        """The check `ticket` failed; the keys this failure locked. `on_lock` runs once in the
        same transaction when it locked any, with the lock's end (e.g. to queue a mail)."""
        locked = []
        until: datetime | None = None
        async with self.db.transaction() as conn:
            for k in sorted(set(keys)):
                state = await self._take(conn, k, now)
                after = state.failed(ticket, now, self.max_attempts, self.window)
                await self._put(conn, k, after)
                if state.locked_until is None and after.locked_until is not None:
                    locked.append(k)
                    until = after.locked_until
            if until is not None and on_lock is not None:
                await on_lock(conn, until)
        return locked

    async def succeed(
        self, conn: Connection, keys: Iterable[str], ticket: str, now: datetime
    ) -> None:
        """The check `ticket` succeeded: the keys' counts start again (caller's transaction)."""
        for k in sorted(set(keys)):
            state = await self._take(conn, k, now)
            await self._put(conn, k, state.succeeded(ticket))

    async def unlock(
        self, conn: Connection, keys: Iterable[str], user_id: str | None, by: str, at: datetime
    ) -> list[str]:
        """Forget the keys' failures and locks, recording who did it; the keys that had any."""
        ended = []
        for k in sorted(set(keys)):
            row = await conn.fetchrow(
                "DELETE FROM login_attempts WHERE name_key = $1 RETURNING locked_until", k
            )
            if row is None:
                continue
            ended.append(k)
            await conn.execute(
                "INSERT INTO login_unlocks (name_key, user_id, locked_until, unlocked_by,"
                " unlocked_at) VALUES ($1, $2, $3, $4, $5)",
                *(k, user_id, row["locked_until"], by, at),
            )
        return ended

    async def unlocks(self, name_key: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT name_key, user_id, locked_until, unlocked_by, unlocked_at FROM login_unlocks"
            " WHERE name_key = $1 ORDER BY id",
            name_key,
        )
        return [dict(r) for r in rows]

    async def purge(self, now: datetime) -> None:
        """Drop the rows that no longer mean anything (unknown names sprayed at login)."""
        await self.db.execute("DELETE FROM login_attempts WHERE expires_at <= $1", now)

    async def _take(self, conn: Connection, name_key: str, now: datetime) -> NameState:
        # The no-op update makes the upsert take the row lock (PostgreSQL); SQLite holds
        # the write lock for the whole transaction already.
        row = await conn.fetchrow(
            "INSERT INTO login_attempts (name_key, attempts, locked_until, expires_at)"
            " VALUES ($1, $2, NULL, $3) ON CONFLICT (name_key)"
            " DO UPDATE SET name_key = excluded.name_key RETURNING attempts, locked_until",
            name_key,
            [],
            now,
        )
        assert row is not None
        return _decode(row["attempts"], row["locked_until"]).current(now, self.window)

    async def _put(self, conn: Connection, name_key: str, state: NameState) -> None:
        expires = state.expires_at(self.window)
        if expires is None:
            await conn.execute("DELETE FROM login_attempts WHERE name_key = $1", name_key)
            return
        await conn.execute(
            "UPDATE login_attempts SET attempts = $2, locked_until = $3, expires_at = $4"
            " WHERE name_key = $1",
            name_key,
            _encode(state),
            state.locked_until,
            expires,
        )
