"""Rows 5-7, in process: event-store appends vs COPY vs `eventsourcing`, cold loads, rebuild."""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from banking_es.application.accounts import AccountService, CommandContext
from banking_es.application.ports import SystemClock, UuidGenerator
from banking_es.cache.local import LocalAccountCache
from banking_es.cache.two_level import TwoLevelAccountCache
from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.domain import commands as cmd
from banking_es.eventstore.base import AppendRequest, NewEvent, StreamAppend
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.projections import default_projections
from banking_es.projections.runner import ProjectionRunner
from bench.common import event_rows, say, scratch_database

APPENDS = 20_000
APPEND_CALLERS = 1_000
#: Row 5's rounds (the median of each is reported; docs/performance.md says how much they
#: vary on a shared machine).
ROUNDS = 5
ES_BATCH = 100
BIG_STREAM = 100_000
LOAD_REPEATS = 30
REBUILD_EVENTS = 1_000_000
REBUILD_ACCOUNTS = 10_000
IDS = UuidGenerator()


def _opened(account_id: str, i: int) -> NewEvent:
    return NewEvent(
        event_id=IDS.new_event_id(),  # as the service makes them
        type="AccountCreated",
        data={
            "account_id": account_id,
            "owner_name": f"Bench Owner {i}",
            "initial_balance": "100.00",
            "currency": "USD",
            "owner_id": None,
        },
        metadata={"command": "OpenAccount", "request_id": str(uuid.uuid4()), "schema": 1},
    )


async def appends_row(url: str) -> dict[str, Any]:
    """Row 5: concurrent single-event appends (with outbox rows) vs COPY vs eventsourcing.

    Each takes well under a second, so a moment of the shared machine's noise moves it by
    a third: five rounds, the store's and COPY's interleaved, and the median of each."""
    store_s: list[float] = []
    copy_s: list[float] = []
    db = await PostgresDatabase.connect(url, max_size=10)
    try:
        await migrate(db)
        for round_ in range(ROUNDS):
            say(
                f"row 5, round {round_ + 1}/{ROUNDS}: {APPENDS:,} concurrent single-event"
                f" appends ({APPEND_CALLERS} callers)"
            )
            head = await db.fetchval("SELECT coalesce(max(position), 0) FROM events")
            store_s.append(await _store_appends(db, round_))
            say(f"row 5, round {round_ + 1}: event store {APPENDS / store_s[-1]:,.0f} appends/s")
            copy_s.append(await _copy_reference(url, round_, head))
            say(f"row 5, round {round_ + 1}: COPY of the same rows {APPENDS / copy_s[-1]:,.0f}/s")
    finally:
        await db.close()
    es_s: list[float] = []
    for round_ in range(ROUNDS):
        es_s.append(await _eventsourcing_reference())
        say(
            f"row 5, round {round_ + 1}: eventsourcing app.save (batches of {ES_BATCH})"
            f" {APPENDS / es_s[-1]:,.0f}/s"
        )
    return {
        "appends": APPENDS,
        "rounds": ROUNDS,
        "store_rate": APPENDS / statistics.median(store_s),
        "copy_rate": APPENDS / statistics.median(copy_s),
        "eventsourcing_rate": APPENDS / statistics.median(es_s),
        "store_rates": [APPENDS / s for s in store_s],
        "copy_rates": [APPENDS / s for s in copy_s],
        "eventsourcing_rates": [APPENDS / s for s in es_s],
    }


async def _store_appends(db: PostgresDatabase, round_: int) -> float:
    """Seconds for APPENDS new streams of one event each, from APPEND_CALLERS callers."""
    store = PostgresEventStore(db)
    ids = [str(uuid.uuid4()) for _ in range(APPENDS)]
    requests = [
        AppendRequest([StreamAppend(account_id, 0, [_opened(account_id, i)])])
        for i, account_id in enumerate(ids)
    ]

    async def caller(part: list[AppendRequest]) -> None:
        for request in part:
            await store.append(request)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(caller(requests[i::APPEND_CALLERS]) for i in range(APPEND_CALLERS)))
        seconds = time.perf_counter() - started
    finally:
        await store.close()
    counts = await db.fetchrow(
        "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM outbox) AS outbox"
    )
    assert counts is not None
    written = APPENDS * (round_ + 1)
    assert counts["events"] == written == counts["outbox"], dict(counts)
    return seconds


async def _copy_reference(url: str, round_: int, after: int) -> float:
    """COPY the rows the store wrote after position `after` into empty copies of its tables,
    with the same indexes."""
    conn = await asyncpg.connect(url)
    events_copy, outbox_copy = f"copy_events_{round_}", f"copy_outbox_{round_}"
    try:
        await conn.execute(
            f"CREATE TABLE {events_copy} (LIKE events INCLUDING ALL);"
            f"CREATE TABLE {outbox_copy} (LIKE outbox INCLUDING ALL);"
        )
        events = await conn.fetch(
            "SELECT position, stream_id, version, event_id, type, data::text, metadata::text,"
            " recorded_at FROM events WHERE position > $1 ORDER BY position",
            after,
        )
        outbox = await conn.fetch(
            "SELECT topic, key, payload::text, event_position, created_at FROM outbox"
            " WHERE event_position > $1 ORDER BY id",
            after,
        )
        assert len(events) == APPENDS == len(outbox), (len(events), len(outbox))
        event_columns = [
            "position", "stream_id", "version", "event_id", "type", "data", "metadata",
            "recorded_at",
        ]  # fmt: skip
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                events_copy, records=[tuple(r) for r in events], columns=event_columns
            )
            await conn.copy_records_to_table(
                outbox_copy,
                records=[tuple(r) for r in outbox],
                columns=["topic", "key", "payload", "event_position", "created_at"],
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _eventsourcing_reference() -> float:
    """The `eventsourcing` library saving APPENDS new aggregates, `app.save` per 100."""
    async with scratch_database("eventsourcing") as url:
        return await asyncio.to_thread(_eventsourcing_save, url)


@functools.cache
def _bench_account() -> type[Any]:
    """The aggregate class, made once (the library refuses a second class of the same name)."""
    from eventsourcing.domain import Aggregate, event

    class BenchAccount(Aggregate):
        @event("Opened")
        def __init__(self, owner_name: str, initial_balance: str, currency: str) -> None:
            self.owner_name = owner_name
            self.balance = initial_balance
            self.currency = currency

    return BenchAccount


def _eventsourcing_save(url: str) -> float:
    from eventsourcing.application import Application

    bench_account = _bench_account()
    parts = urlsplit(url)
    app: Application[Any] = Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/"),
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "CREATE_TABLE": "y",
        }
    )
    try:
        aggregates = [bench_account(f"Bench Owner {i}", "100.00", "USD") for i in range(APPENDS)]
        started = time.perf_counter()
        for i in range(0, APPENDS, ES_BATCH):
            app.save(*aggregates[i : i + ES_BATCH])
        return time.perf_counter() - started
    finally:
        app.close()


async def load_row(url: str) -> dict[str, Any]:
    """Row 6: a cold load (empty cache) of an account with 10 events vs 100,000 events."""
    db = await PostgresDatabase.connect(url, max_size=10)
    try:
        await migrate(db)
        store = PostgresEventStore(db)
        cache = TwoLevelAccountCache(LocalAccountCache(10_000, 300, "lru"), None)
        service = AccountService(
            store, cache, clock=SystemClock(), ids=UuidGenerator(), snapshot_threshold=100
        )
        ctx = CommandContext()
        small = await service.open_account(cmd.OpenAccount("Small", Decimal("1.00"), "USD"), ctx)
        big = await service.open_account(cmd.OpenAccount("Big", Decimal("1.00"), "USD"), ctx)
        small_id, big_id = small.id, big.id  # type: ignore[union-attr]
        for _ in range(9):
            await service.deposit(cmd.Deposit(small_id, Decimal("1.00"), "bench", None), ctx)
        say(f"row 6: writing {BIG_STREAM - 1:,} deposits to one account (256 callers)")
        started = time.perf_counter()

        async def depositor(count: int) -> None:
            for _ in range(count):
                await service.deposit(cmd.Deposit(big_id, Decimal("1.00"), "bench", None), ctx)

        callers = 256
        total = BIG_STREAM - 1
        shares = [total // callers + (1 if i < total % callers else 0) for i in range(callers)]
        await asyncio.gather(*(depositor(share) for share in shares))
        write_s = time.perf_counter() - started
        say(f"row 6: {total / write_s:,.0f} deposits/s in process on one account")

        async def cold(account_id: str) -> tuple[float, int]:
            cache.invalidate(account_id)
            t0 = time.perf_counter()
            account = await service.get_account(account_id)
            return time.perf_counter() - t0, account.version

        small_times: list[float] = []
        big_times: list[float] = []
        for _ in range(LOAD_REPEATS):
            elapsed, version = await cold(small_id)
            assert version == 10, version
            small_times.append(elapsed)
            elapsed, version = await cold(big_id)
            assert version == BIG_STREAM, version
            big_times.append(elapsed)
        small_ms = statistics.median(small_times) * 1000
        big_ms = statistics.median(big_times) * 1000
        say(f"row 6: cold load {small_ms:.2f} ms (10 events) vs {big_ms:.2f} ms (100,000)")
        await store.close()
        return {
            "small_ms": small_ms,
            "big_ms": big_ms,
            "ratio": big_ms / small_ms,
            "in_process_deposits_per_s": total / write_s,
        }
    finally:
        await db.close()


async def rebuild_row(url: str) -> dict[str, Any]:
    """Row 7: ProjectionRunner.rebuild of every read model over 1,000,000 events."""
    db = await PostgresDatabase.connect(url, max_size=10)
    try:
        await migrate(db)
        say(f"row 7: generating {REBUILD_EVENTS:,} events")
        rows = list(event_rows(REBUILD_EVENTS, datetime.now(UTC), REBUILD_ACCOUNTS))
        say("row 7: COPY into the events table")
        conn = await asyncpg.connect(url)
        try:
            t0 = time.perf_counter()
            await conn.copy_records_to_table(
                "events",
                records=rows,
                columns=[
                    "position", "stream_id", "version", "event_id", "type", "data", "metadata",
                    "recorded_at",
                ],
            )  # fmt: skip
            await conn.execute("ANALYZE events")
            say(f"row 7: COPY took {time.perf_counter() - t0:.1f}s")
        finally:
            await conn.close()
        del rows
        store = PostgresEventStore(db)
        runner = ProjectionRunner(db, store, default_projections())
        per_projection: dict[str, float] = {}
        for name in runner.names:
            marks = {REBUILD_EVENTS * k // 4 for k in range(1, 5)}

            def progress(done: int, total: int, name: str = name, marks: set[int] = marks) -> None:
                for mark in sorted(marks):
                    if done >= mark:
                        marks.discard(mark)
                        say(f"row 7: {name} {done:,}/{total:,}")

            say(f"row 7: rebuilding {name}")
            started = time.perf_counter()
            applied = await runner.rebuild(name, progress=progress)
            elapsed = time.perf_counter() - started
            assert applied == REBUILD_EVENTS, applied
            per_projection[name] = REBUILD_EVENTS / elapsed
            say(f"row 7: {name} {per_projection[name]:,.0f} events/s")
        summaries = await db.fetchval("SELECT count(*) FROM account_summaries")
        assert summaries == REBUILD_ACCOUNTS, summaries
        await store.close()
        total_s = sum(REBUILD_EVENTS / rate for rate in per_projection.values())
        return {
            "events": REBUILD_EVENTS,
            "per_projection": per_projection,
            "rate": min(per_projection.values()),
            "all_read_models_rate": REBUILD_EVENTS / total_s,
        }
    finally:
        await db.close()
