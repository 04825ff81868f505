"""`account_summaries`: one row per account, the fold of all of its events.

A batch loads the rows of the accounts it touches in one query, folds the events in memory
and writes the changed rows back in one multi-row upsert; an event not above a row's
`version` is already in it, so re-applying a batch changes nothing. A summary depends on
every event of its account, so a type-selected replay folds them all. `reset` rolls a row
back to its state at a position by folding that account's events up to it again.
Details: docs/architecture.md ("Read models").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cachetools import LRUCache

from banking_es.db.base import Connection, Dialect, Row
from banking_es.domain.events import (
    EVENT_TYPES,
    AccountClosed,
    AccountCreated,
    AccountFrozen,
    AccountUnfrozen,
    DomainEvent,
    HoldCaptured,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferSent,
)
from banking_es.eventstore.base import (
    ROW_STREAM,
    ROW_TYPE,
    EventRow,
    RecordedEvent,
    decode_row,
)
from banking_es.eventstore.codec import to_domain
from banking_es.projections._sql import in_set, json_rows, json_rows_select

log = logging.getLogger(__name__)

OPEN = "open"
CLOSED = "closed"
FROZEN = "frozen"

#: The event types this projection folds: every account event, since each moves the
#: row's `version` (holds and limits change no column of it besides).
HANDLED_TYPES = frozenset(EVENT_TYPES)

_COLUMNS = (
    "account_id, owner_name, owner_id, balance, currency, status, version,"
    " created_position, created_at, updated_at"
)
_UPDATE = (
    " ON CONFLICT (account_id) DO UPDATE SET owner_name = excluded.owner_name,"
    " owner_id = excluded.owner_id, balance = excluded.balance, currency = excluded.currency,"
    " status = excluded.status, version = excluded.version,"
    " created_position = excluded.created_position, created_at = excluded.created_at,"
    " updated_at = excluded.updated_at"
)
#: The PostgreSQL types of `_COLUMNS`, in order.
_TYPES = "text text text numeric text text int bigint timestamptz timestamptz"
_UPSERT_PG = f"INSERT INTO account_summaries ({_COLUMNS}) {json_rows_select(_TYPES)}{_UPDATE}"
_UPSERT_SQLITE = (
    f"INSERT INTO account_summaries ({_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)" + _UPDATE
)
#: Accounts per statement when rolling rows back (keeps parameter lists and reads bounded).
_RESET_CHUNK = 500
#: Accounts whose row `apply_rows` remembers between batches.
MEMORY_SIZE = 100_000


@dataclass(slots=True)
class Summary:
    """One `account_summaries` row as the projection makes it."""

    account_id: str
    owner_name: str
    owner_id: str | None
    balance: Decimal
    currency: str
    status: str
    version: int
    created_position: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Summary:
        return cls(
            account_id=row["account_id"],
            owner_name=row["owner_name"],
            owner_id=row["owner_id"],
            balance=row["balance"],
            currency=row["currency"],
            status=row["status"],
            version=row["version"],
            created_position=row["created_position"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def values(self) -> tuple[Any, ...]:
        return (
            self.account_id,
            self.owner_name,
            self.owner_id,
            self.balance,
            self.currency,
            self.status,
            self.version,
            self.created_position,
            self.created_at,
            self.updated_at,
        )


def fold_summaries(
    states: dict[str, Summary],
    events: Iterable[RecordedEvent],
    changed: set[str],
    decode: Callable[[RecordedEvent], DomainEvent] = to_domain,
) -> None:
    """Fold `events` into `states` (by account id), adding every changed account to `changed`.
    `decode` turns a stored event into its domain event (a caller that has decoded them
    already passes a look-up)."""
    for recorded in events:
        if recorded.type not in HANDLED_TYPES:
            continue
        account_id = recorded.stream_id
        state = states.get(account_id)
        if state is not None and recorded.version <= state.version:
            continue  # already folded into the row
        event = decode(recorded)
        if isinstance(event, AccountCreated):
            if state is not None:
                log.warning(
                    "account %s: AccountCreated at version %d after version %d; ignored",
                    account_id,
                    recorded.version,
                    state.version,
                )
                continue
            states[account_id] = Summary(
                account_id=account_id,
                owner_name=event.owner_name,
                owner_id=event.owner_id,
                balance=event.initial_balance,
                currency=event.currency,
                status=OPEN,
                version=recorded.version,
                created_position=recorded.position,
                created_at=recorded.recorded_at,
                updated_at=recorded.recorded_at,
            )
            changed.add(account_id)
            continue
        if state is None:
            log.warning(
                "account %s: %s at version %d but no summary row; ignored",
                account_id,
                recorded.type,
                recorded.version,
            )
            continue
        if isinstance(event, MoneyDeposited | TransferReceived):
            state.balance += event.amount
        elif isinstance(event, MoneyWithdrawn | TransferSent | HoldCaptured):
            state.balance -= event.amount
        elif isinstance(event, AccountClosed):
            state.status = CLOSED
        elif isinstance(event, AccountFrozen):
            state.status = FROZEN
        elif isinstance(event, AccountUnfrozen):
            state.status = OPEN
        state.version = recorded.version
        state.updated_at = recorded.recorded_at
        changed.add(account_id)


class AccountSummariesProjection:
    """Keeps `account_summaries` (see the module docstring)."""

    name: str = "account_summaries"

    def __init__(self, memory_size: int = MEMORY_SIZE) -> None:
        #: Account -> its row as `apply_rows` last wrote (or read) it.
        self._rows: LRUCache[str, Summary] = LRUCache(maxsize=memory_size)

    def forget(self) -> None:
        self._rows.clear()

    async def apply(
        self,
        conn: Connection,
        events: Sequence[RecordedEvent],
        *,
        only_types: frozenset[str] | None = None,
    ) -> None:
        relevant = [e for e in events if e.type in HANDLED_TYPES]
        await self._apply(conn, [e.stream_id for e in relevant], relevant)

    async def apply_rows(self, conn: Connection, rows: Sequence[EventRow]) -> None:
        relevant = [row for row in rows if row[ROW_TYPE] in HANDLED_TYPES]
        streams = [row[ROW_STREAM] for row in relevant]
        await self._apply(conn, streams, map(decode_row, relevant), remembered=self._rows)

    async def _apply(
        self,
        conn: Connection,
        streams: list[str],
        events: Iterable[RecordedEvent],
        remembered: LRUCache[str, Summary] | None = None,
    ) -> None:
        """Fold `events` (of the handled types, by account `streams`) into their rows, taken
        from `remembered` when there (and put there after)."""
        if not streams:
            return
        dialect = conn.dialect
        account_ids = list(dict.fromkeys(streams))
        states: dict[str, Summary] = {}
        missing = account_ids
        if remembered is not None:
            missing = []
            for account_id in account_ids:
                state = remembered.get(account_id)
                if state is None:
                    missing.append(account_id)
                else:
                    states[account_id] = state
        if missing:
            states.update(await self._load(conn, dialect, missing))
        changed: set[str] = set()
        fold_summaries(states, events, changed)
        await self._write(conn, dialect, [states[a] for a in account_ids if a in changed])
        if remembered is not None:
            for account_id, state in states.items():
                remembered[account_id] = state

    async def reset(
        self, conn: Connection, from_position: int, types: frozenset[str] | None
    ) -> None:
        dialect = conn.dialect
        if from_position <= 0 and types is None:
            await conn.execute(
                "TRUNCATE account_summaries"
                if dialect == "postgres"
                else "DELETE FROM account_summaries"
            )
            return
        # The accounts whose rows took in an event (of `types`) after the position.
        if types is None:
            rows = await conn.fetch(
                "SELECT DISTINCT stream_id FROM events WHERE position > $1", from_position
            )
        else:
            rows = await conn.fetch(
                "SELECT DISTINCT stream_id FROM events WHERE position > $1"
                f" AND type {in_set(dialect, 2)}",
                from_position,
                sorted(types),
            )
        affected = [r["stream_id"] for r in rows]
        for start in range(0, len(affected), _RESET_CHUNK):
            chunk = affected[start : start + _RESET_CHUNK]
            states: dict[str, Summary] = {}
            if from_position > 0:
                history = await conn.fetch(
                    "SELECT position, stream_id, version, event_id, type, data, metadata,"
                    f" recorded_at FROM events WHERE stream_id {in_set(dialect, 1)}"
                    " AND position <= $2 ORDER BY position",
                    chunk,
                    from_position,
                )
                fold_summaries(states, (_event(r) for r in history), set())
            await conn.execute(
                f"DELETE FROM account_summaries WHERE account_id {in_set(dialect, 1)}", chunk
            )
            await self._write(conn, dialect, list(states.values()))

    @staticmethod
    async def _load(
        conn: Connection, dialect: Dialect, account_ids: list[str]
    ) -> dict[str, Summary]:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM account_summaries WHERE account_id {in_set(dialect, 1)}",
            account_ids,
        )
        return {r["account_id"]: Summary.from_row(r) for r in rows}

    @staticmethod
    async def _write(conn: Connection, dialect: Dialect, states: list[Summary]) -> None:
        if not states:
            return
        if dialect == "postgres":
            await conn.execute(_UPSERT_PG, json_rows(s.values() for s in states))
        else:
            await conn.executemany(_UPSERT_SQLITE, [s.values() for s in states])


def _event(row: Row) -> RecordedEvent:
    return RecordedEvent(
        position=row["position"],
        stream_id=row["stream_id"],
        version=row["version"],
        event_id=row["event_id"],
        type=row["type"],
        data=row["data"],
        metadata=row["metadata"],
        recorded_at=row["recorded_at"],
    )
