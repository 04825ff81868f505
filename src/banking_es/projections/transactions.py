"""`transactions`: one row per money movement, with the balance right after it.

`AccountCreated` makes an `opening` row, `MoneyDeposited` a `deposit`, `MoneyWithdrawn` a
`withdrawal`, `TransferSent` a `transfer_out`, `TransferReceived` a `transfer_in`,
`HoldPlaced` a `hold` (no money moved; `status` pending until the hold's `HoldCaptured`,
`HoldVoided` or `HoldExpired` sets it) and `HoldCaptured` a `hold_capture` (the hold id as
`transfer_id` of both). `balance_after` continues from the projection's own rows and is
carried through a batch in memory; rows are de-duplicated by (account_id, version), and a
status is set, not added, so re-applying an event has no effect. How batches are read
and written (COPY in rebuilds, the remembered last rows): docs/architecture.md ("Read
models").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from cachetools import LRUCache

from banking_es.db.base import BulkCopy, Connection, Dialect
from banking_es.domain.events import (
    AccountCreated,
    DomainEvent,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldVoided,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferSent,
)
from banking_es.domain.money import ZERO
from banking_es.eventstore.base import (
    ROW_STREAM,
    ROW_TYPE,
    ROW_VERSION,
    EventRow,
    RecordedEvent,
    decode_row,
)
from banking_es.eventstore.codec import to_domain
from banking_es.projections._sql import in_set, json_rows, json_rows_select

log = logging.getLogger(__name__)

#: Event type -> the `type` of the row it makes.
ROW_TYPES: dict[str, str] = {
    AccountCreated.type: "opening",
    MoneyDeposited.type: "deposit",
    MoneyWithdrawn.type: "withdrawal",
    TransferSent.type: "transfer_out",
    TransferReceived.type: "transfer_in",
    HoldPlaced.type: "hold",
    HoldCaptured.type: "hold_capture",
}
#: Event type -> the status it gives its hold's `hold` row.
SETTLED: dict[str, str] = {
    HoldCaptured.type: "captured",
    HoldVoided.type: "voided",
    HoldExpired.type: "expired",
}
PENDING = "pending"
#: The types whose events write or settle `hold` rows.
_HOLD_TYPES = frozenset({HoldPlaced.type, *SETTLED})
#: Hold id -> (its account, its status, the position that settled it).
Settlements = dict[str, tuple[str, str, int]]

_COLUMNS = (
    "id, account_id, type, amount, balance_after, description, version, transfer_id,"
    " position, occurred_at, status, settled_position"
)
_COLUMN_NAMES = tuple(c.strip() for c in _COLUMNS.split(","))
#: The fewest rows written with `COPY` rather than an INSERT: the batches of a rebuild
#: (`REBUILD_BATCH_SIZE`), not those of a live runner (hundreds of rows, cheaper for the
#: client as one JSON document; docs/performance.md).
COPY_MIN_ROWS = 2000
#: Accounts whose last row `apply_rows` remembers between batches.
MEMORY_SIZE = 100_000
_INSERT_PG = f"INSERT INTO transactions ({_COLUMNS}) " + json_rows_select(
    "text text text numeric numeric text int text bigint timestamptz text bigint"
)
_INSERT_SQLITE = (
    f"INSERT INTO transactions ({_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
# A hold row's id is its hold's id (the `HoldPlaced` event's id): found by primary key.
_SETTLE_PG = (
    "UPDATE transactions t SET status = u.status, settled_position = u.position FROM ("
    + json_rows_select("text text text bigint")
    + ") AS u(id, account_id, status, position)"
    " WHERE t.id = u.id AND t.account_id = u.account_id AND t.type = 'hold'"
)
_SETTLE_SQLITE = (
    "UPDATE transactions SET status = $3, settled_position = $4"
    " WHERE id = $1 AND account_id = $2 AND type = 'hold'"
)
_DEDUPLICATE = " ON CONFLICT DO NOTHING"
# For each account of a batch: the balance of its row with the greatest version below the
# batch's first event of that account, and whether a row at or above that version exists.
_PREVIOUS_PG = (
    "SELECT k.account_id,"
    " (SELECT t.balance_after FROM transactions t WHERE t.account_id = k.account_id"
    "  AND t.version < k.first_version ORDER BY t.version DESC LIMIT 1) AS balance_after,"
    " EXISTS (SELECT 1 FROM transactions t WHERE t.account_id = k.account_id"
    "  AND t.version >= k.first_version) AS later"
    " FROM unnest($1::text[], $2::int[]) AS k(account_id, first_version)"
)
_PREVIOUS_SQLITE = (
    "SELECT j.key AS account_id,"
    " (SELECT t.balance_after FROM transactions t WHERE t.account_id = j.key"
    "  AND t.version < j.value ORDER BY t.version DESC LIMIT 1) AS balance_after,"
    " EXISTS (SELECT 1 FROM transactions t WHERE t.account_id = j.key"
    "  AND t.version >= j.value) AS later"
    " FROM json_each($1) AS j"
)


class TransactionsProjection:
    """Keeps `transactions` (see the module docstring)."""

    name: str = "transactions"

    def __init__(self, memory_size: int = MEMORY_SIZE) -> None:
        #: Account -> (version, balance_after) of the last row `apply_rows` wrote.
        self._last: LRUCache[str, tuple[int, Decimal]] = LRUCache(maxsize=memory_size)

    def forget(self) -> None:
        self._last.clear()

    async def apply(
        self,
        conn: Connection,
        events: Sequence[RecordedEvent],
        *,
        only_types: frozenset[str] | None = None,
    ) -> None:
        relevant = [e for e in events if e.type in ROW_TYPES]
        settling = [e for e in events if e.type in SETTLED]
        if (
            only_types is not None
            and not any(e.type in only_types for e in relevant)
            and (not settling or only_types.isdisjoint(_HOLD_TYPES))
        ):
            return
        first: dict[str, int] = {}
        for e in relevant:
            first.setdefault(e.stream_id, e.version)
        await self._apply(conn, first, len(relevant), relevant, settlements(settling), only_types)

    async def apply_rows(self, conn: Connection, rows: Sequence[EventRow]) -> None:
        relevant = [row for row in rows if row[ROW_TYPE] in ROW_TYPES]
        settled = settlements(decode_row(row) for row in rows if row[ROW_TYPE] in SETTLED)
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for row in relevant:
            first.setdefault(row[ROW_STREAM], row[ROW_VERSION])
            last[row[ROW_STREAM]] = row[ROW_VERSION]
        decoded = map(decode_row, relevant)
        count = len(relevant)
        balances = await self._apply(conn, first, count, decoded, settled, None, self._last)
        for account_id, version in last.items():
            self._last[account_id] = (version, balances[account_id])

    async def _apply(
        self,
        conn: Connection,
        first: dict[str, int],
        count: int,
        events: Iterable[RecordedEvent],
        settled: Settlements,
        only_types: frozenset[str] | None,
        remembered: LRUCache[str, tuple[int, Decimal]] | None = None,
    ) -> dict[str, Decimal]:
        """Write the rows of `events` (`count` of them, of `ROW_TYPES`; `first` holds each
        account's first version among them), set the statuses `settled` gives, and answer
        each account's balance after them. The balance before an account's first event
        comes from `remembered` when it holds that account's row just before it, else from
        the table."""
        balances: dict[str, Decimal] = {}
        if only_types is not None and only_types.isdisjoint(_HOLD_TYPES):
            settled = {}  # a replay of other types leaves the statuses as they are
        dialect = conn.dialect
        written: set[str] = set()
        later = False
        if count:
            unknown = first
            if remembered:
                unknown = {}
                for account_id, version in first.items():
                    known = remembered.get(account_id)
                    if known is not None and known[0] < version:
                        balances[account_id] = known[1]
                    else:
                        unknown[account_id] = version
            if unknown:
                read, later = await self._previous(conn, dialect, unknown)
                balances.update(read)
            rows = transaction_rows(events, balances, only_types, to_domain, settled, written)
            # Re-applied events conflict on (account_id, version); when no row exists at or
            # after the batch's versions nothing can conflict, and the plain INSERT (or COPY)
            # is cheaper.
            if not later and count >= COPY_MIN_ROWS and isinstance(conn, BulkCopy):
                # The rows are made while COPY sends the earlier ones: client and server overlap.
                await conn.copy_records("transactions", _COLUMN_NAMES, rows)
            else:
                await self._insert(conn, dialect, list(rows), deduplicate=later)
        # The holds placed before this batch (or whose rows were there already) get their
        # status by UPDATE; those written now carried it.
        await self._settle(
            conn,
            dialect,
            [
                (hold_id, *settlement)
                for hold_id, settlement in settled.items()
                if later or hold_id not in written
            ],
        )
        return balances

    async def reset(
        self, conn: Connection, from_position: int, types: frozenset[str] | None
    ) -> None:
        dialect = conn.dialect
        if types is None:
            if from_position <= 0:
                await conn.execute(
                    "TRUNCATE transactions" if dialect == "postgres" else "DELETE FROM transactions"
                )
            else:
                await conn.execute("DELETE FROM transactions WHERE position > $1", from_position)
                await self._unsettle(conn, dialect, from_position, sorted(set(SETTLED.values())))
            return
        row_types = sorted({ROW_TYPES[t] for t in types if t in ROW_TYPES})
        if row_types:
            await conn.execute(
                f"DELETE FROM transactions WHERE position > $1 AND type {in_set(dialect, 2)}",
                from_position,
                row_types,
            )
        statuses = sorted({SETTLED[t] for t in types if t in SETTLED})
        if statuses:
            await self._unsettle(conn, dialect, from_position, statuses)

    @staticmethod
    async def _unsettle(
        conn: Connection, dialect: Dialect, from_position: int, statuses: list[str]
    ) -> None:
        """Put back to pending the holds settled (with one of `statuses`) after the position."""
        await conn.execute(
            f"UPDATE transactions SET status = '{PENDING}', settled_position = NULL"
            f" WHERE type = 'hold' AND settled_position > $1 AND status {in_set(dialect, 2)}",
            from_position,
            statuses,
        )

    @staticmethod
    async def _settle(
        conn: Connection, dialect: Dialect, rows: list[tuple[str, str, str, int]]
    ) -> None:
        """Set the status of the `hold` rows of `rows` (hold id, account, status, position)."""
        if not rows:
            return
        if dialect == "postgres":
            await conn.execute(_SETTLE_PG, json_rows(rows))
        else:
            await conn.executemany(_SETTLE_SQLITE, rows)

    @staticmethod
    async def _previous(
        conn: Connection, dialect: Dialect, first: dict[str, int]
    ) -> tuple[dict[str, Decimal], bool]:
        """The balance before each account's first event (by account) and whether any of
        these accounts already has a row at or after that event's version."""
        if dialect == "postgres":
            rows = await conn.fetch(_PREVIOUS_PG, list(first), list(first.values()))
        else:
            rows = await conn.fetch(_PREVIOUS_SQLITE, first)
        balances: dict[str, Decimal] = {}
        later = False
        for row in rows:
            later = later or bool(row["later"])
            value = row["balance_after"]
            if value is not None:
                # SQLite gives the stored text (a subquery's column has no declared type).
                balances[row["account_id"]] = (
                    value if isinstance(value, Decimal) else Decimal(value)
                )
        return balances, later

    @staticmethod
    async def _insert(
        conn: Connection, dialect: Dialect, rows: list[tuple[Any, ...]], *, deduplicate: bool
    ) -> None:
        if not rows:
            return
        suffix = _DEDUPLICATE if deduplicate else ""
        if dialect == "postgres":
            await conn.execute(_INSERT_PG + suffix, json_rows(rows))
        else:
            await conn.executemany(_INSERT_SQLITE + suffix, rows)


def settlements(
    events: Iterable[RecordedEvent], decode: Callable[[RecordedEvent], DomainEvent] = to_domain
) -> Settlements:
    """The statuses the hold settlements among `events` (of `SETTLED` types) give."""
    settled: Settlements = {}
    for recorded in events:
        event = decode(recorded)
        assert isinstance(event, HoldCaptured | HoldVoided | HoldExpired)
        settled[event.hold_id] = (recorded.stream_id, SETTLED[recorded.type], recorded.position)
    return settled


def transaction_rows(
    relevant: Iterable[RecordedEvent],
    balances: dict[str, Decimal],
    only_types: frozenset[str] | None = None,
    decode: Callable[[RecordedEvent], DomainEvent] = to_domain,
    settled: Settlements | None = None,
    written: set[str] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The rows of `relevant` (events of `ROW_TYPES`), carrying `balances` (by account)
    forward through every event, also those of types `only_types` leaves out. `decode`
    turns a stored event into its domain event; a `hold` row takes its status from
    `settled` (pending if absent) and its id is added to `written`."""
    for recorded in relevant:
        event = decode(recorded)
        account_id = recorded.stream_id
        transfer_id: str | None = None
        description: str | None = None
        status: str | None = None
        settled_position: int | None = None
        if isinstance(event, AccountCreated):
            amount = event.initial_balance
            balance = amount
        else:
            previous = balances.get(account_id)
            if previous is None:
                log.warning(
                    "account %s: no transaction before version %d; balance taken as 0",
                    account_id,
                    recorded.version,
                )
                previous = ZERO
            if isinstance(event, MoneyDeposited):
                amount, description = event.amount, event.description
                balance = previous + amount
            elif isinstance(event, MoneyWithdrawn):
                amount, description = event.amount, event.description
                balance = previous - amount
            elif isinstance(event, TransferReceived):
                amount, description = event.amount, event.description
                transfer_id = event.transfer_id
                balance = previous + amount
            elif isinstance(event, TransferSent):
                amount, description = event.amount, event.description
                transfer_id = event.transfer_id
                balance = previous - amount
            elif isinstance(event, HoldPlaced):
                amount, description = event.amount, event.description
                transfer_id = event.hold_id
                balance = previous  # held, not moved
                status = PENDING
                settlement = settled.get(recorded.event_id) if settled else None
                if settlement is not None:
                    _, status, settled_position = settlement
            elif isinstance(event, HoldCaptured):
                amount, transfer_id = event.amount, event.hold_id
                balance = previous - amount
            else:  # pragma: no cover - ROW_TYPES and the branches above agree
                raise TypeError(f"unexpected event {type(event).__name__}")
        balances[account_id] = balance
        if only_types is None or recorded.type in only_types:
            if status is not None and written is not None:
                written.add(recorded.event_id)
            yield (
                recorded.event_id,
                account_id,
                ROW_TYPES[recorded.type],
                amount,
                balance,
                description,
                recorded.version,
                transfer_id,
                recorded.position,
                recorded.recorded_at,
                status,
                settled_position,
            )
