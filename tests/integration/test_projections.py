"""Projections (account summaries, transactions) and their runner, on SQLite and PostgreSQL.

Expected tables are computed independently of the projection code: summaries by folding
the stored events with the domain `Account`, transactions by a plain loop here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from banking_es.application.ports import SystemClock
from banking_es.db.base import Connection, Database, DatabaseUnavailable
from banking_es.db.lease import LeaseElection
from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase, _PgConnection
from banking_es.db.sqlite import SqliteDatabase
from banking_es.domain.account import Account
from banking_es.domain.events import (
    AccountClosed,
    AccountCreated,
    DomainEvent,
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
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.eventstore.sqlite import SqliteEventStore
from banking_es.projections import (
    AccountSummariesProjection,
    TransactionsProjection,
    default_projections,
)
from banking_es.projections import runner as runner_module
from banking_es.projections import transactions as transactions_module
from banking_es.projections.base import Projection, RowProjection
from banking_es.projections.checkpoints import lock_key
from banking_es.projections.queries import ReadModels
from banking_es.projections.runner import PROJECTIONS_LEASE, ProjectionRunner

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


@pytest.fixture(params=BACKENDS)
def sql_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def db_location(sql_backend: str, request: pytest.FixtureRequest) -> str:
    if sql_backend == "sqlite":
        path: Path = request.getfixturevalue("sqlite_path")
        return str(path)
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def open_env(sql_backend: str, db_location: str) -> AsyncIterator[Opener]:
    """Open (another) database connection plus event store on this test's database."""
    opened: list[Env] = []

    async def open_() -> Env:
        db: Database
        if sql_backend == "sqlite":
            db = await SqliteDatabase.connect(db_location)
        else:
            db = await PostgresDatabase.connect(db_location)
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        store = SqliteEventStore(db) if sql_backend == "sqlite" else PostgresEventStore(db)
        env = Env(db, store)
        opened.append(env)
        return env

    try:
        yield open_
    finally:
        for env in reversed(opened):
            try:
                await env.store.close()
            finally:
                await env.db.close()


@pytest.fixture
async def env(open_env: Opener) -> Env:
    return await open_env()


# ---- realistic events -------------------------------------------------------------------


def new_event(event: DomainEvent) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), event.type, event.to_data(), {"schema": 1})


@dataclass
class _Acct:
    id: str
    owner_id: str
    version: int = 0
    balance: Decimal = Decimal("0.00")
    open: bool = True


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

    async def close(self, acct: _Acct) -> None:
        if acct.balance > 0:
            amount = acct.balance
            await self._append([(acct, MoneyWithdrawn(amount, "closing"))])
            acct.balance -= amount
        await self._append([(acct, AccountClosed("no longer needed"))])
        acct.open = False

    async def random_ops(self, count: int) -> None:
        for _ in range(count):
            live = [a for a in self.accounts if a.open]
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


async def populate(store: EventStore, ops: int = 80, seed: int = 7) -> Bank:
    bank = Bank(store, random.Random(seed))
    for _ in range(4):
        await bank.open()
    await bank.random_ops(ops)
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
            "transfer_id": data.get("transfer_id"),
            "position": rec.position,
            "occurred_at": rec.recorded_at,
        }
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


# ---- tests ------------------------------------------------------------------------------


async def test_projections_match_a_replay(env: Env) -> None:
    await populate(env.store, ops=120)
    head = await env.store.head_position()
    runner = runner_for(env)

    applied = await run_all(runner)

    assert applied == {SUMMARIES: head, TRANSACTIONS: head}
    assert await checkpoint(env.db, SUMMARIES) == head
    assert await checkpoint(env.db, TRANSACTIONS) == head
    await assert_matches_replay(env)
    summaries, transactions = await tables(env.db)
    assert {s["status"] for s in summaries.values()} == {"open", "closed"}
    assert {t["type"] for t in transactions.values()} == {
        "opening",
        "deposit",
        "withdrawal",
        "transfer_in",
        "transfer_out",
    }


async def test_small_batches_interleaved_with_writes_match_a_replay(env: Env) -> None:
    bank = await populate(env.store, ops=10, seed=1)
    runner = runner_for(env, batch_size=3)
    for _ in range(6):
        await run_all(runner)
        await bank.random_ops(15)
    await run_all(runner)
    await assert_matches_replay(env)


async def test_a_failure_in_apply_moves_neither_rows_nor_checkpoint(env: Env) -> None:
    bank = await populate(env.store, ops=30)
    await run_all(runner_for(env))
    before = await tables(env.db)
    position = await env.store.head_position()
    await bank.random_ops(30)

    exploding = [Exploding(AccountSummariesProjection()), Exploding(TransactionsProjection())]
    crashing = runner_for(env, exploding, batch_size=1000)
    for name in (SUMMARIES, TRANSACTIONS):
        with pytest.raises(RuntimeError, match="crash"):
            await crashing.run_once(name)
    assert [p.calls for p in exploding] == [1, 1]  # the rows were written, then rolled back
    assert await tables(env.db) == before
    assert await checkpoint(env.db, SUMMARIES) == position
    assert await checkpoint(env.db, TRANSACTIONS) == position

    await run_all(runner_for(env))
    await assert_matches_replay(env)


async def test_running_again_and_reapplying_events_changes_nothing(env: Env) -> None:
    await populate(env.store, ops=60)
    runner = runner_for(env)
    await run_all(runner)
    before = await tables(env.db)

    assert await run_all(runner) == {SUMMARIES: 0, TRANSACTIONS: 0}
    # Apply every event a second time, bypassing the checkpoint: rows are de-duplicated.
    events = await all_events(env.store)
    rows = await env.store.read_rows(0, len(events))
    async with env.db.transaction() as conn:
        for projection in default_projections():
            await projection.apply(conn, events)
            await projection.apply(conn, events[len(events) // 2 :])
            assert isinstance(projection, RowProjection)
            await projection.apply_rows(conn, rows)
            await projection.apply_rows(conn, rows[len(rows) // 3 :])
    assert await tables(env.db) == before
    await assert_matches_replay(env)


async def test_concurrent_runners_apply_each_event_exactly_once(open_env: Opener) -> None:
    env_a, env_b = await open_env(), await open_env()
    await env_a.db.execute("CREATE TABLE test_audit (position bigint NOT NULL)")
    runners = [
        runner_for(
            env, [*default_projections(), AuditProjection()], poll_interval=0.01, batch_size=4
        )
        for env in (env_a, env_b)
    ]

    def notify() -> None:
        for runner in runners:
            runner.notify()

    bank_a = Bank(env_a.store, random.Random(1), on_append=notify)
    bank_b = Bank(env_b.store, random.Random(2), on_append=notify)
    for runner in runners:
        await runner.start()
    try:
        await asyncio.gather(bank_a.random_ops(60), bank_b.random_ops(60))
        head = await env_a.store.head_position()
        assert await runners[0].wait_for(head, 30)
        assert await runners[1].wait_for(head, 1)
    finally:
        for runner in runners:
            await runner.stop()

    duplicates = await env_a.db.fetch(
        "SELECT position, count(*) AS n FROM test_audit GROUP BY position HAVING count(*) > 1"
    )
    assert duplicates == []
    assert await env_a.db.fetchval("SELECT count(*) FROM test_audit") == head
    assert await env_a.db.fetchval("SELECT count(DISTINCT position) FROM test_audit") == head
    await assert_matches_replay(env_a)


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_rebuild_by_a_second_process_while_the_server_runs(open_env: Opener) -> None:
    server_env, cli_env = await open_env(), await open_env()
    bank = await populate(server_env.store, ops=40)
    server = runner_for(server_env, poll_interval=0.01, batch_size=10)
    bank.on_append = server.notify
    cli = runner_for(cli_env, batch_size=10)
    await server.start()
    try:
        writes = asyncio.create_task(bank.random_ops(40))
        for name in (SUMMARIES, TRANSACTIONS):
            await cli.rebuild(name)
        await cli.rebuild(TRANSACTIONS, from_position=20)
        await writes
        assert await server.wait_for(await server_env.store.head_position(), 30)
    finally:
        await server.stop()
    await assert_matches_replay(server_env)


@pytest.mark.postgres
async def test_postgres_batches_wait_for_the_advisory_lock(pg_url: str) -> None:
    envs: list[Env] = []
    try:
        for _ in range(2):
            db = await PostgresDatabase.connect(pg_url)
            envs.append(Env(db, PostgresEventStore(db)))
            await migrate(db)
        await populate(envs[0].store, ops=10)
        runner = runner_for(envs[0])
        async with envs[1].db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(TRANSACTIONS))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(runner.run_once(TRANSACTIONS), 0.3)
            assert await checkpoint(envs[0].db, TRANSACTIONS) == 0
            assert await runner.run_once(SUMMARIES) > 0  # other projections are not held up
        assert await runner.run_once(TRANSACTIONS) == await envs[0].store.head_position()
        await assert_matches_replay(envs[0])
    finally:
        for env in envs:
            await env.store.close()
            await env.db.close()


@pytest.mark.postgres
async def test_postgres_summary_updates_are_hot_updates(pg_url: str) -> None:
    """A projection batch rewrites the row of every account it touches: no index may cover a
    column that changes (balance, version, updated_at), and the pages keep room, so
    PostgreSQL updates the row in place (HOT) instead of adding an entry to every index."""
    db = await PostgresDatabase.connect(pg_url)
    env = Env(db, PostgresEventStore(db))
    try:
        await migrate(db)
        bank = await populate(env.store, ops=0)
        runner = runner_for(env, [AccountSummariesProjection()])
        await runner.run_once(SUMMARIES)
        for acct in bank.accounts:
            await bank.deposit(acct)
        after = await checkpoint(db, SUMMARIES)
        events = await env.store.read_all(after, 100)
        async with db.transaction() as conn:
            await AccountSummariesProjection().apply(conn, events)
            counts = await conn.fetchrow(
                "SELECT pg_stat_get_xact_tuples_updated(c.oid) AS updated,"
                " pg_stat_get_xact_tuples_hot_updated(c.oid) AS hot"
                " FROM pg_class c WHERE c.relname = 'account_summaries'"
            )
        assert counts is not None
        assert counts["updated"] == len(bank.accounts) == 4
        assert counts["hot"] == counts["updated"]
    finally:
        await env.store.close()
        await db.close()


@pytest.fixture
def small_rebuild_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let rebuilds use the runner's (small) batch size, so they take many batches."""
    monkeypatch.setattr(runner_module, "REBUILD_BATCH_SIZE", 1)


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_full_rebuild_restores_the_tables(env: Env) -> None:
    await populate(env.store, ops=80)
    runner = runner_for(env, batch_size=16)
    await run_all(runner)
    before = await tables(env.db)
    head = await env.store.head_position()

    await env.db.execute("UPDATE account_summaries SET balance = balance + 1, status = 'bogus'")
    await env.db.execute("UPDATE transactions SET balance_after = 0")
    await env.db.execute("DELETE FROM transactions WHERE version % 3 = 0")
    calls: list[tuple[int, int]] = []
    for name in (SUMMARIES, TRANSACTIONS):
        calls.clear()
        assert await runner.rebuild(name, progress=lambda d, t: calls.append((d, t))) == head
        assert calls[0] == (0, head)
        assert calls[-1] == (head, head)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        assert await checkpoint(env.db, name) == head
    assert await tables(env.db) == before
    await assert_matches_replay(env)


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the rows each PostgreSQL `COPY` wrote (one entry per statement)."""
    counted: list[int] = []
    original = _PgConnection.copy_records

    async def copy_records(
        self: _PgConnection, table: str, columns: Sequence[str], records: Iterable[Sequence[Any]]
    ) -> None:
        sent = 0

        def counting() -> Iterator[Sequence[Any]]:
            nonlocal sent
            for record in records:
                sent += 1
                yield record

        await original(self, table, columns, counting())
        counted.append(sent)

    monkeypatch.setattr(_PgConnection, "copy_records", copy_records)
    return counted


@pytest.mark.parametrize("sql_backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.usefixtures("small_rebuild_batches")
async def test_a_rebuild_by_copy_writes_the_rows_of_small_batches(
    env: Env, copies: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    await populate(env.store, ops=150)
    head = await env.store.head_position()
    await runner_for(env, batch_size=5).run_once(TRANSACTIONS)
    assert copies == []  # small batches INSERT
    before = await transactions_table(env.db)

    # Batches of 40 by COPY, each carrying the balances on from the rows of the one before.
    monkeypatch.setattr(transactions_module, "COPY_MIN_ROWS", 10)
    runner = runner_for(env, batch_size=40)
    assert await runner.rebuild(TRANSACTIONS) == head
    assert len(copies) >= 3
    assert sum(copies) == len(before)
    assert await transactions_table(env.db) == before
    assert await checkpoint(env.db, TRANSACTIONS) == head

    # A crash in a batch written by COPY rolls back its rows and its checkpoint.
    copies.clear()
    exploding = Exploding(TransactionsProjection())
    with pytest.raises(RuntimeError, match="crash"):
        await runner_for(env, [exploding], batch_size=40).rebuild(TRANSACTIONS)
    assert len(copies) == 1
    assert await transactions_table(env.db) == {}
    assert await checkpoint(env.db, TRANSACTIONS) == 0

    # So does a failure while COPY is sending the rows (they are made as it goes).
    make_rows = transactions_module.transaction_rows

    def failing_rows(*args: Any) -> Iterator[tuple[Any, ...]]:
        for count, row in enumerate(make_rows(*args)):
            if count == 5:
                raise RuntimeError("bad event in the middle of a batch")
            yield row

    monkeypatch.setattr(transactions_module, "transaction_rows", failing_rows)
    with pytest.raises(RuntimeError, match="bad event"):
        await runner.run_once(TRANSACTIONS)
    assert await transactions_table(env.db) == {}
    assert await checkpoint(env.db, TRANSACTIONS) == 0
    monkeypatch.setattr(transactions_module, "transaction_rows", make_rows)
    assert await runner.run_once(TRANSACTIONS) == head
    assert await transactions_table(env.db) == before
    assert before == expected_transactions(await all_events(env.store))


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_rebuild_from_a_position_redoes_only_what_follows_it(env: Env) -> None:
    await populate(env.store, ops=80)
    runner = runner_for(env, batch_size=10)
    await run_all(runner)
    before = await tables(env.db)
    head = await env.store.head_position()
    middle = head // 2
    events = await all_events(env.store)
    touched_after = sorted({e.stream_id for e in events if e.position > middle})
    untouched = sorted({e.stream_id for e in events} - set(touched_after))
    assert touched_after

    # Corrupt rows derived from events after the position, and mark rows before it.
    await env.db.execute("UPDATE transactions SET balance_after = -1 WHERE position > $1", middle)
    await env.db.execute("DELETE FROM transactions WHERE position > $1 AND version % 2 = 0", middle)
    await env.db.execute(
        "UPDATE transactions SET description = 'kept' WHERE position <= $1", middle
    )
    for account_id in touched_after:
        await env.db.execute(
            "UPDATE account_summaries SET balance = -1, version = 1 WHERE account_id = $1",
            account_id,
        )
    if untouched:
        await env.db.execute(
            "UPDATE account_summaries SET owner_name = 'kept' WHERE account_id = $1", untouched[0]
        )

    assert await runner.rebuild(SUMMARIES, from_position=middle) == head - middle
    assert await runner.rebuild(TRANSACTIONS, from_position=middle) == head - middle

    summaries, transactions = await tables(env.db)
    for row_id, row in transactions.items():
        if row["position"] <= middle:
            assert row["description"] == "kept"
        else:
            assert row == before[1][row_id]
    assert set(transactions) == set(before[1])
    for account_id, row in summaries.items():
        if untouched and account_id == untouched[0]:
            assert row["owner_name"] == "kept"
        else:
            assert row == before[0][account_id]
    assert set(summaries) == set(before[0])
    assert await checkpoint(env.db, SUMMARIES) == head


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_rebuild_of_selected_types_keeps_the_checkpoint(env: Env) -> None:
    bank = await populate(env.store, ops=80)
    runner = runner_for(env, batch_size=8)
    await run_all(runner)
    before = await tables(env.db)
    head = await env.store.head_position()
    middle = head // 3
    events = await all_events(env.store)
    deposits_after = [e for e in events if e.type == "MoneyDeposited" and e.position > middle]
    withdrawal_after = next(e for e in events if e.type == "MoneyWithdrawn" and e.position > middle)
    assert deposits_after

    await env.db.execute(
        "UPDATE transactions SET balance_after = 0, amount = 0"
        " WHERE type = 'deposit' AND position > $1",
        middle,
    )
    await env.db.execute(
        "UPDATE transactions SET description = 'before' WHERE type = 'deposit' AND position <= $1",
        middle,
    )
    await env.db.execute("DELETE FROM transactions WHERE id = $1", deposits_after[0].event_id)
    await env.db.execute(
        "UPDATE transactions SET description = 'untouched' WHERE id = $1",
        withdrawal_after.event_id,
    )
    await env.db.execute(
        "UPDATE account_summaries SET balance = 0 WHERE account_id = $1",
        deposits_after[-1].stream_id,
    )
    # Events after the checkpoint stay unapplied by a type-selected rebuild.
    await bank.random_ops(20)

    calls: list[tuple[int, int]] = []
    for name in (SUMMARIES, TRANSACTIONS):
        calls.clear()
        await runner.rebuild(
            name,
            from_position=middle,
            types=["MoneyDeposited"],
            progress=lambda d, t: calls.append((d, t)),
        )
        assert calls[-1] == (head - middle, head - middle)
        assert await checkpoint(env.db, name) == head

    summaries, transactions = await tables(env.db)
    assert summaries == before[0]
    for row_id, row in before[1].items():
        if row["type"] == "deposit" and row["position"] <= middle:
            assert transactions[row_id] == {**row, "description": "before"}  # not replayed
        elif row_id == withdrawal_after.event_id:
            assert transactions[row_id] == {**row, "description": "untouched"}
        else:
            assert transactions[row_id] == row
    assert set(transactions) == set(before[1])

    # Catching up afterwards applies the newer events on top.
    await run_all(runner)
    await env.db.execute(
        "UPDATE transactions SET description = $2 WHERE id = $1",
        withdrawal_after.event_id,
        before[1][withdrawal_after.event_id]["description"],
    )
    await runner.rebuild(TRANSACTIONS, types=["MoneyDeposited"])
    await assert_matches_replay(env)


async def test_status_reports_lag(env: Env) -> None:
    await populate(env.store, ops=20)
    head = await env.store.head_position()
    runner = runner_for(env)
    await asyncio.sleep(0.05)

    status = {s.name: s for s in await runner.status()}
    assert set(status) == {SUMMARIES, TRANSACTIONS}
    for s in status.values():
        assert (s.position, s.head, s.lag_events, s.updated_at) == (0, head, head, None)
        assert s.lag_seconds >= 0.05

    await runner.run_once(SUMMARIES)
    status = {s.name: s for s in await runner.status()}
    assert status[SUMMARIES].position == head
    assert status[SUMMARIES].lag_events == 0
    assert status[SUMMARIES].lag_seconds == 0
    assert status[SUMMARIES].updated_at is not None
    assert status[TRANSACTIONS].lag_events == head
    assert status[TRANSACTIONS].lag_seconds >= 0.05


async def test_the_background_loop_follows_writes_and_survives_errors(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(TransactionsProjection(), failures=2)
    counting = CountingStore(env.store)
    runner = ProjectionRunner(
        env.db, counting, [AccountSummariesProjection(), flaky], poll_interval=0.05
    )
    bank = Bank(env.store, random.Random(3), on_append=runner.notify)
    caplog.set_level(logging.ERROR, logger="banking_es.projections.runner")
    await runner.start()
    try:
        await runner.start()  # a second start is a no-op
        await bank.random_ops(30)
        assert await runner.wait_for(await env.store.head_position(), 10)
        assert flaky.calls > 2
        failures = [r for r in caplog.records if "batch failed" in r.getMessage()]
        assert len(failures) == 2
        assert failures[1].created - failures[0].created >= 0.04  # backed off between tries

        # Idle: one cheap read per projection and poll, not a busy loop.
        counting.reads = 0
        await asyncio.sleep(0.5)
        assert counting.reads <= 2 * (0.5 / 0.05 + 3)

        await bank.random_ops(5)
        assert await runner.wait_for(await env.store.head_position(), 5)
    finally:
        await runner.stop()
    await assert_matches_replay(env)


async def test_with_a_lease_only_the_leader_runs_and_a_stand_by_takes_over(
    open_env: Opener,
) -> None:
    """Two server processes: the lease holder applies every batch, the other does not even
    read the store; once the leader stops (and gives the lease up) the other carries on."""
    envs = [await open_env(), await open_env()]
    stores = [CountingStore(env.store) for env in envs]
    leaders = [LeaseElection(env.db, PROJECTIONS_LEASE, SystemClock(), ttl=5.0) for env in envs]
    runners = [
        ProjectionRunner(env.db, store, default_projections(), poll_interval=0.05, leader=leader)
        for env, store, leader in zip(envs, stores, leaders, strict=True)
    ]
    bank = Bank(envs[0].store, random.Random(5), on_append=lambda: [r.notify() for r in runners])
    await runners[0].start()
    deadline = time.monotonic() + 10
    while not leaders[0].is_leader:  # the first takes the lease
        assert time.monotonic() < deadline, "the first runner never took the lease"
        await asyncio.sleep(0.01)
    await runners[1].start()
    try:
        await bank.random_ops(30)
        assert await runners[1].wait_for(await envs[0].store.head_position(), 10)
        assert stores[0].reads > 0
        assert stores[1].reads == 0

        await runners[0].stop()
        await bank.random_ops(10)
        assert await runners[1].wait_for(await envs[0].store.head_position(), 10)
        assert stores[1].reads > 0
    finally:
        for runner in runners:
            await runner.stop()
    await assert_matches_replay(envs[0])


async def test_one_read_serves_every_projection_even_when_more_came_since(env: Env) -> None:
    counting = CountingStore(env.store)
    runner = ProjectionRunner(env.db, counting, default_projections())
    bank = await populate(env.store, ops=30)
    assert await runner.run_once(SUMMARIES) > 0
    assert counting.reads == 1
    assert await runner.run_once(TRANSACTIONS) > 0
    assert counting.reads == 1  # the same batch, read once

    await bank.random_ops(10)
    await runner.run_once(SUMMARIES)  # reads these ...
    reads = counting.reads
    await bank.random_ops(10)  # ... and more come before the other projection runs
    await runner.run_once(TRANSACTIONS)  # the shared batch, then the rest from the store
    assert counting.reads == reads + 1
    await runner.run_once(SUMMARIES)  # the rest, as read for the other projection
    assert counting.reads == reads + 1
    await assert_matches_replay(env)


def spy_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The accounts whose rows the projections read back from their tables from now on."""
    asked: list[str] = []
    load = AccountSummariesProjection._load
    previous = TransactionsProjection._previous

    async def spied_load(conn: Connection, dialect: Any, account_ids: list[str]) -> Any:
        asked.extend(account_ids)
        return await load(conn, dialect, account_ids)

    async def spied_previous(conn: Connection, dialect: Any, first: dict[str, int]) -> Any:
        asked.extend(first)
        return await previous(conn, dialect, first)

    monkeypatch.setattr(AccountSummariesProjection, "_load", staticmethod(spied_load))
    monkeypatch.setattr(TransactionsProjection, "_previous", staticmethod(spied_previous))
    return asked


async def test_batches_take_the_rows_they_wrote_from_memory_until_someone_else_writes(
    open_env: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, other = await open_env(), await open_env()
    bank = await populate(env.store, ops=30)
    runner = runner_for(env)
    await run_all(runner)
    asked = spy_reads(monkeypatch)
    live = [a for a in bank.accounts if a.open]
    for acct in live:
        await bank.deposit(acct)
    await run_all(runner)
    assert asked == []  # every account's row came from memory
    await assert_matches_replay(env)

    for acct in live:  # another process applies these: the rows change behind its back
        await bank.deposit(acct)
    await run_all(runner_for(other))
    for acct in live:
        await bank.deposit(acct)
    asked.clear()
    await run_all(runner)
    assert sorted(asked) == sorted([a.id for a in live] * 2)  # so it read them again
    await assert_matches_replay(env)


async def test_a_batch_that_rolls_back_leaves_nothing_remembered(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = await populate(env.store, ops=30)
    runner = runner_for(env)
    await run_all(runner)
    await bank.random_ops(30)
    write = runner_module.write_checkpoint

    async def failing(conn: Connection, name: str, position: int) -> None:
        raise DatabaseUnavailable("connection lost (simulated)")

    monkeypatch.setattr(runner_module, "write_checkpoint", failing)
    for name in (SUMMARIES, TRANSACTIONS):  # applied (and remembered), then rolled back
        with pytest.raises(DatabaseUnavailable):
            await runner.run_once(name)
    monkeypatch.setattr(runner_module, "write_checkpoint", write)
    await run_all(runner)
    await assert_matches_replay(env)


async def test_bad_arguments_are_refused(env: Env) -> None:
    runner = runner_for(env)
    with pytest.raises(KeyError, match="nope"):
        await runner.run_once("nope")
    with pytest.raises(ValueError, match="types"):
        await runner.rebuild(TRANSACTIONS, types=[])
    with pytest.raises(ValueError, match="two projections"):
        runner_for(env, [TransactionsProjection(), TransactionsProjection()])
    with pytest.raises(ValueError, match="limit"):
        await ReadModels(env.db).list_accounts(None, None, 0)


async def test_wait_for_times_out_without_a_runner(env: Env) -> None:
    await populate(env.store, ops=2)
    runner = runner_for(env)
    started = time.monotonic()
    assert not await runner.wait_for(1, 0.1)
    assert time.monotonic() - started < 1
    await run_all(runner)
    assert await runner.wait_for(await env.store.head_position(), 0.1)


async def test_list_accounts_pages_oldest_first(env: Env) -> None:
    bank = Bank(env.store, random.Random(4))
    mine = [await bank.open("me") for _ in range(3)]
    other = await bank.open("you")
    mine += [await bank.open("me") for _ in range(2)]
    await bank.deposit(mine[0])
    await run_all(runner_for(env))
    reads = ReadModels(env.db)

    seen: list[str] = []
    after: int | None = None
    pages = 0
    while True:
        page, has_more = await reads.list_accounts("me", after, 2)
        pages += 1
        seen += [a.account_id for a in page]
        if not has_more:
            break
        after = page[-1].created_position
    assert seen == [a.id for a in mine]
    assert pages == 3

    everything, has_more = await reads.list_accounts(None, None, 100)
    assert not has_more
    assert [a.account_id for a in everything] == [
        *(a.id for a in mine[:3]),
        other.id,
        *(a.id for a in mine[3:]),
    ]
    first = everything[0]
    assert first.balance == mine[0].balance
    assert first.version == 2
    assert first.status == "open"
    assert first.owner_id == "me"
    assert first.created_at.tzinfo is not None
    assert first.updated_at > first.created_at
    exact, has_more = await reads.list_accounts("me", None, 5)
    assert (len(exact), has_more) == (5, False)
    assert await reads.list_accounts("nobody", None, 5) == ([], False)


async def test_list_transactions_pages_newest_first(env: Env) -> None:
    bank = Bank(env.store, random.Random(5))
    acct, other = await bank.open("me", Decimal("100.00")), await bank.open("me")
    for _ in range(4):
        await bank.deposit(acct)
        await bank.withdraw(acct)
    await bank.transfer(acct, other)
    await bank.close(acct)  # a withdrawal to zero, then the close (no row)
    await run_all(runner_for(env))
    reads = ReadModels(env.db)

    versions: list[int] = []
    before: int | None = None
    while True:
        page, has_more = await reads.list_transactions(acct.id, before, 3)
        versions += [t.version for t in page]
        if not has_more:
            break
        before = page[-1].version
    assert versions == list(range(acct.version - 1, 0, -1))

    rows, _ = await reads.list_transactions(acct.id, None, 100)
    assert rows[0].type == "withdrawal"
    assert rows[0].balance_after == Decimal("0.00")
    assert rows[1].type == "transfer_out"
    assert rows[1].transfer_id is not None
    assert rows[-1].type == "opening"
    assert rows[-1].amount == rows[-1].balance_after == Decimal("100.00")
    assert rows[-1].occurred_at.tzinfo is not None
    incoming, _ = await reads.list_transactions(other.id, None, 100)
    assert incoming[0].type == "transfer_in"
    assert incoming[0].transfer_id == rows[1].transfer_id
    assert await reads.list_transactions(str(uuid.uuid4()), None, 10) == ([], False)


# ---- speed --------------------------------------------------------------------------------


async def bulk_populate(store: EventStore, accounts: int, events: int) -> None:
    """About `events` events over `accounts` accounts, appended in large requests."""
    rng = random.Random(11)
    ids = [str(uuid.uuid4()) for _ in range(accounts)]
    versions = dict.fromkeys(ids, 0)
    balances = dict.fromkeys(ids, Decimal("1000.00"))
    for start in range(0, accounts, 200):
        chunk = ids[start : start + 200]
        await store.append(
            AppendRequest(
                [
                    StreamAppend(
                        a, 0, [new_event(AccountCreated(a, "Bulk", Decimal("1000.00"), "USD", "o"))]
                    )
                    for a in chunk
                ]
            )
        )
        for a in chunk:
            versions[a] = 1
    written = accounts
    while written < events:
        parts = []
        for a in rng.sample(ids, 50):
            batch: list[NewEvent] = []
            for _ in range(20):
                amount = Decimal(rng.randint(1, 5000)) / 100
                if rng.random() < 0.5 and balances[a] >= amount:
                    balances[a] -= amount
                    batch.append(new_event(MoneyWithdrawn(amount, None)))
                else:
                    balances[a] += amount
                    batch.append(new_event(MoneyDeposited(amount, "bulk")))
            parts.append(StreamAppend(a, versions[a], batch))
            versions[a] += len(batch)
            written += len(batch)
        await store.append(AppendRequest(parts))


@pytest.mark.slow
@pytest.mark.postgres
async def test_rebuild_speed_on_postgres(pg_url: str) -> None:
    db = await PostgresDatabase.connect(pg_url)
    store = PostgresEventStore(db)
    try:
        await migrate(db)
        await bulk_populate(store, accounts=2000, events=100_000)
        head = await store.head_position()
        runner = ProjectionRunner(db, store, default_projections())

        started = time.perf_counter()
        counts = await asyncio.gather(*(runner.rebuild(n) for n in (SUMMARIES, TRANSACTIONS)))
        elapsed = time.perf_counter() - started
        assert counts == [head, head]
        print(
            f"\nrebuilt both projections over {head} events in {elapsed:.2f} s:"
            f" {head / elapsed:,.0f} events/s ({2 * head / elapsed:,.0f} applications/s)"
        )
        for name in (SUMMARIES, TRANSACTIONS):
            started = time.perf_counter()
            await runner.rebuild(name)
            one = time.perf_counter() - started
            print(f"{name} alone: {head / one:,.0f} events/s")
        assert await db.fetchval("SELECT count(*) FROM transactions") == head
    finally:
        await store.close()
        await db.close()
