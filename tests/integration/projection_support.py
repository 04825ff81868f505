"""Helpers of the projection tests (SQLite and PostgreSQL): realistic histories, the tables
expected from them, and test projections.

Expected tables are computed independently of the projection code: summaries by folding
the stored events with the domain `Account`, transactions by a plain loop here.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from banking_es.db.base import Connection, Database, DatabaseUnavailable
from banking_es.domain.account import Account
from banking_es.domain.events import (
    AccountClosed,
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
from banking_es.eventstore.base import (
    AppendRequest,
    EventRow,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
)
from banking_es.eventstore.codec import to_domain
from banking_es.projections import default_projections
from banking_es.projections.base import Projection
from banking_es.projections.runner import ProjectionRunner

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

SUMMARIES = "account_summaries"
TRANSACTIONS = "transactions"


# ---- environment ------------------------------------------------------------------------


@dataclass
class Env:
    db: Database
    store: EventStore


Opener = Callable[[], Awaitable[Env]]

# ---- realistic events -------------------------------------------------------------------


def new_event(event: DomainEvent) -> NewEvent:
    # A hold's id is its HoldPlaced's event id, as the command handlers make it.
    event_id = event.hold_id if isinstance(event, HoldPlaced) else str(uuid.uuid4())
    return NewEvent(event_id, event.type, event.to_data(), {"schema": 1})


@dataclass
class _Acct:
    id: str
    owner_id: str
    version: int = 0
    balance: Decimal = Decimal("0.00")
    open: bool = True
    #: Pending holds (id -> amount), already taken from `balance` (what may be spent).
    holds: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class Bank:
    """Writes valid account histories through the store, like the command handlers would."""

    store: EventStore
    rng: random.Random
    owners: Sequence[str] = ("owner-a", "owner-b", "owner-c")
    accounts: list[_Acct] = field(default_factory=list)
    on_append: Callable[[], None] | None = None

    async def _append(self, parts: list[tuple[_Acct, DomainEvent]]) -> None:
        await self.store.append(
            AppendRequest(
                [StreamAppend(acct.id, acct.version, [new_event(ev)]) for acct, ev in parts]
            )
        )
        for acct, _ in parts:
            acct.version += 1
        if self.on_append is not None:
            self.on_append()

    def _money(self, low: int, high: int) -> Decimal:
        return Decimal(self.rng.randint(low * 100, high * 100)) / 100

    async def open(self, owner_id: str | None = None, initial: Decimal | None = None) -> _Acct:
        owner = owner_id or self.rng.choice(self.owners)
        acct = _Acct(str(uuid.uuid4()), owner)
        amount = self._money(0, 500) if initial is None else initial
        created = AccountCreated(acct.id, f"Owner of {owner}", amount, "USD", owner)
        await self._append([(acct, created)])
        acct.balance = amount
        self.accounts.append(acct)
        return acct

    async def deposit(self, acct: _Acct) -> None:
        amount = self._money(1, 300)
        await self._append([(acct, MoneyDeposited(amount, f"deposit {acct.version}"))])
        acct.balance += amount

    async def withdraw(self, acct: _Acct) -> None:
        if acct.balance <= 0:
            return await self.deposit(acct)
        amount = min(acct.balance, self._money(1, 200))
        await self._append([(acct, MoneyWithdrawn(amount, None))])
        acct.balance -= amount

    async def transfer(self, source: _Acct, target: _Acct) -> None:
        if source.balance <= 0:
            return await self.deposit(source)
        amount = min(source.balance, self._money(1, 150))
        transfer_id = str(uuid.uuid4())
        await self._append(
            [
                (source, TransferSent(transfer_id, target.id, amount, "rent")),
                (target, TransferReceived(transfer_id, source.id, amount, "rent")),
            ]
        )
        source.balance -= amount
        target.balance += amount

    async def place_hold(self, acct: _Acct) -> None:
        if acct.balance <= 0:
            return await self.deposit(acct)
        amount = min(acct.balance, self._money(1, 100))
        hold_id = str(uuid.uuid4())
        expires = datetime.now(UTC) + timedelta(days=7)
        await self._append([(acct, HoldPlaced(hold_id, amount, None, expires, "card"))])
        acct.balance -= amount
        acct.holds[hold_id] = amount

    async def settle_hold(self, acct: _Acct, hold_id: str, how: str) -> None:
        """Capture (all of it), void or expire a pending hold."""
        amount = acct.holds.pop(hold_id)
        event: DomainEvent
        if how == "capture":
            event = HoldCaptured(hold_id, amount, Decimal("0.00"))
        else:
            event = (HoldVoided if how == "void" else HoldExpired)(hold_id, amount)
            acct.balance += amount
        await self._append([(acct, event)])

    async def hold_op(self, live: Sequence[_Acct]) -> None:
        """Place a hold, or settle a pending one."""
        acct = self.rng.choice(live)
        if acct.holds and self.rng.random() < 0.6:
            how = self.rng.choice(("capture", "void", "expire"))
            await self.settle_hold(acct, self.rng.choice(sorted(acct.holds)), how)
        else:
            await self.place_hold(acct)

    async def close(self, acct: _Acct) -> None:
        for hold_id in sorted(acct.holds):
            await self.settle_hold(acct, hold_id, "void")
        if acct.balance > 0:
            amount = acct.balance
            await self._append([(acct, MoneyWithdrawn(amount, "closing"))])
            acct.balance -= amount
        await self._append([(acct, AccountClosed("no longer needed"))])
        acct.open = False

    async def random_ops(self, count: int, *, holds: bool = False) -> None:
        """`count` random operations; with `holds`, about a third of them on holds."""
        for _ in range(count):
            live = [a for a in self.accounts if a.open]
            if holds and len(live) >= 3 and self.rng.random() < 0.35:
                await self.hold_op(live)
                continue
            roll = self.rng.random()
            if len(live) < 3 or roll < 0.08:
                await self.open()
            elif roll < 0.45:
                await self.deposit(self.rng.choice(live))
            elif roll < 0.7:
                await self.withdraw(self.rng.choice(live))
            elif roll < 0.95:
                source, target = self.rng.sample(live, 2)
                await self.transfer(source, target)
            else:
                await self.close(self.rng.choice(live))


async def populate(store: EventStore, ops: int = 80, seed: int = 7, *, holds: bool = False) -> Bank:
    bank = Bank(store, random.Random(seed))
    for _ in range(4):
        await bank.open()
    await bank.random_ops(ops, holds=holds)
    return bank


# ---- expected tables --------------------------------------------------------------------


async def all_events(store: EventStore) -> list[RecordedEvent]:
    found: list[RecordedEvent] = []
    while True:
        batch = await store.read_all(found[-1].position if found else 0, 1000)
        if not batch:
            return found
        found.extend(batch)


def expected_summaries(events: Sequence[RecordedEvent]) -> dict[str, dict[str, Any]]:
    accounts: dict[str, Account] = {}
    created: dict[str, int] = {}
    for rec in events:
        account = accounts.setdefault(rec.stream_id, Account(rec.stream_id))
        account.apply(to_domain(rec), rec.recorded_at)
        if rec.type == "AccountCreated":
            created[rec.stream_id] = rec.position
    return {
        a.id: {
            "account_id": a.id,
            "owner_name": a.owner_name,
            "owner_id": a.owner_id,
            "balance": a.balance,
            "currency": a.currency,
            "status": a.status,
            "version": a.version,
            "created_position": created[a.id],
            "created_at": a.created_at,
            "updated_at": a.updated_at,
        }
        for a in accounts.values()
    }


def expected_transactions(events: Sequence[RecordedEvent]) -> dict[str, dict[str, Any]]:
    kinds = {
        "AccountCreated": ("opening", 1),
        "MoneyDeposited": ("deposit", 1),
        "MoneyWithdrawn": ("withdrawal", -1),
        "TransferSent": ("transfer_out", -1),
        "TransferReceived": ("transfer_in", 1),
        "HoldPlaced": ("hold", 0),
        "HoldCaptured": ("hold_capture", -1),
    }
    statuses = {"HoldCaptured": "captured", "HoldVoided": "voided", "HoldExpired": "expired"}
    settled = {
        rec.data["hold_id"]: (statuses[rec.type], rec.position)
        for rec in events
        if rec.type in statuses
    }
    balances: dict[str, Decimal] = {}
    rows: dict[str, dict[str, Any]] = {}
    for rec in events:
        if rec.type not in kinds:
            continue
        kind, sign = kinds[rec.type]
        data = rec.data
        amount = Decimal(data["initial_balance"] if kind == "opening" else data["amount"])
        balance = amount if kind == "opening" else balances[rec.stream_id] + sign * amount
        balances[rec.stream_id] = balance
        rows[rec.event_id] = {
            "id": rec.event_id,
            "account_id": rec.stream_id,
            "type": kind,
            "amount": amount,
            "balance_after": balance,
            "description": data.get("description"),
            "version": rec.version,
            "transfer_id": data.get("transfer_id", data.get("hold_id")),
            "position": rec.position,
            "occurred_at": rec.recorded_at,
            "status": None,
            "settled_position": None,
        }
        if kind == "hold":
            status, position = settled.get(rec.event_id, ("pending", None))
            rows[rec.event_id].update(status=status, settled_position=position)
    return rows


async def summaries_table(db: Database) -> dict[str, dict[str, Any]]:
    return {r["account_id"]: dict(r) for r in await db.fetch("SELECT * FROM account_summaries")}


async def transactions_table(db: Database) -> dict[str, dict[str, Any]]:
    return {r["id"]: dict(r) for r in await db.fetch("SELECT * FROM transactions")}


async def tables(db: Database) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    return await summaries_table(db), await transactions_table(db)


async def checkpoint(db: Database, name: str) -> int:
    value = await db.fetchval("SELECT position FROM projection_checkpoints WHERE name = $1", name)
    return int(value) if value is not None else 0


async def assert_matches_replay(env: Env) -> None:
    events = await all_events(env.store)
    summaries, transactions = await tables(env.db)
    assert summaries == expected_summaries(events)
    assert transactions == expected_transactions(events)


def runner_for(
    env: Env, projections: Sequence[Projection] | None = None, **kw: Any
) -> ProjectionRunner:
    return ProjectionRunner(
        env.db, env.store, default_projections() if projections is None else projections, **kw
    )


async def run_all(runner: ProjectionRunner) -> dict[str, int]:
    return {name: await runner.run_once(name) for name in (SUMMARIES, TRANSACTIONS)}


# ---- test projections -------------------------------------------------------------------


class AuditProjection:
    """Records every applied position, with no de-duplication: shows exactly-once."""

    name = "audit"

    async def apply(
        self,
        conn: Connection,
        events: Sequence[RecordedEvent],
        *,
        only_types: frozenset[str] | None = None,
    ) -> None:
        await conn.executemany(
            "INSERT INTO test_audit (position) VALUES ($1)", [(e.position,) for e in events]
        )

    async def reset(
        self, conn: Connection, from_position: int, types: frozenset[str] | None
    ) -> None:
        await conn.execute("DELETE FROM test_audit WHERE position > $1", from_position)


class Exploding:
    """Applies like `inner`, then fails: the batch's transaction must roll back."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    async def apply(
        self,
        conn: Connection,
        events: Sequence[RecordedEvent],
        *,
        only_types: frozenset[str] | None = None,
    ) -> None:
        self.calls += 1
        await self.inner.apply(conn, events, only_types=only_types)
        raise RuntimeError("crash in the middle of a batch")

    async def reset(
        self, conn: Connection, from_position: int, types: frozenset[str] | None
    ) -> None:
        await self.inner.reset(conn, from_position, types)


class Flaky(Exploding):
    """Fails with a database error on its first `failures` batches, then works."""

    def __init__(self, inner: Projection, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures

    async def apply(
        self,
        conn: Connection,
        events: Sequence[RecordedEvent],
        *,
        only_types: frozenset[str] | None = None,
    ) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise DatabaseUnavailable("connection lost (simulated)")
        await self.inner.apply(conn, events, only_types=only_types)


class CountingStore:
    """Delegates to a store, counting `read_all` and `read_rows` calls."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        self.reads += 1
        return await self.inner.read_all(after_position, limit, types)

    async def read_rows(self, after_position: int, limit: int) -> list[EventRow]:
        self.reads += 1
        return await self.inner.read_rows(after_position, limit)
