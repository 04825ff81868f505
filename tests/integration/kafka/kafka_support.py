"""Helpers of the Kafka tests (a real Tansu broker): the environment of a test (database, store,
relays and runners it closes), topic reads, and comparisons with a replay.

Projections fed from Kafka are compared with tables computed independently from the
stored events (the helpers of `projection_support.py`).
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from tests.integration.kafka_broker import TansuBroker
from tests.integration.projection_support import (
    all_events,
    expected_summaries,
    expected_transactions,
    tables,
)

from banking_es.application.ports import SystemClock
from banking_es.db.base import Database
from banking_es.db.lease import LeaseElection
from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.db.sqlite import SqliteDatabase
from banking_es.eventstore.base import EventStore
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.eventstore.sql import SqlEventStore
from banking_es.eventstore.sqlite import SqliteEventStore
from banking_es.messaging.kafka import KafkaConfig, KafkaPublisher, Topics
from banking_es.messaging.relay import OutboxRelay
from banking_es.projections import AccountSummariesProjection, TransactionsProjection
from banking_es.projections.base import Projection
from banking_es.projections.kafka_applier import KafkaProjectionApplier
from banking_es.projections.kafka_runner import KafkaProjectionRunner
from banking_es.projections.transactions import ROW_TYPES

PARTITIONS = 4


def config_for(broker: TansuBroker, **overrides: Any) -> KafkaConfig:
    options: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap,
        "topics": Topics(f"t{uuid.uuid4().hex[:10]}"),
        "partitions": PARTITIONS,
        # Quick joins, rebalances and failure detection for tests.
        "request_timeout_ms": 3000,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 300,
        "rebalance_timeout_ms": 3000,
        "max_poll_interval_ms": 10000,
    }
    options.update(overrides)
    return KafkaConfig(**options)


@dataclass
class Env:
    db: Database
    store: SqlEventStore
    config: KafkaConfig
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    runners: list[KafkaProjectionRunner] = field(default_factory=list)

    def relay(self, *, holder: str | None = None, ttl: float = 5.0) -> OutboxRelay:
        publisher = KafkaPublisher(self.config)
        election = LeaseElection(self.db, "outbox-relay", SystemClock(), holder=holder, ttl=ttl)
        relay = OutboxRelay(
            self.store, publisher, SystemClock(), poll_interval=0.05, leader=election
        )
        self.closers.append(publisher.close)
        self.closers.append(relay.stop)
        return relay

    def runner(
        self, projections: Sequence[Projection] | None = None, **options: Any
    ) -> KafkaProjectionRunner:
        applier = KafkaProjectionApplier(
            self.db,
            self.store,
            projections or [AccountSummariesProjection(), TransactionsProjection()],
            self.config.topics.events,
        )
        publisher = KafkaPublisher(self.config)
        options.setdefault("backoff", 0.02)
        options.setdefault("max_attempts", 3)
        runner = KafkaProjectionRunner(applier, self.config, publisher=publisher, **options)
        self.closers.append(publisher.close)
        self.closers.append(runner.stop)
        self.runners.append(runner)
        return runner


async def open_db(backend: str, location: str) -> Database:
    if backend == "sqlite":
        return await SqliteDatabase.connect(location)
    return await PostgresDatabase.connect(location)


class EnvContext:
    """Opens the `Env` of a test on entry; closes its relays, runners, store and database."""

    def __init__(
        self, broker: TansuBroker, tmp_path: Path, request: pytest.FixtureRequest, backend: str
    ) -> None:
        self._args = (broker, tmp_path, request, backend)
        self._env: Env | None = None

    async def __aenter__(self) -> Env:
        broker, tmp_path, request, backend = self._args
        location = (
            str(tmp_path / "bank.db")
            if backend == "sqlite"
            else str(request.getfixturevalue("pg_url"))
        )
        db = await open_db(backend, location)
        await migrate(db)
        store: SqlEventStore = (
            SqliteEventStore(db) if db.dialect == "sqlite" else PostgresEventStore(db)
        )
        self._env = Env(db, store, config_for(broker))
        return self._env

    async def __aexit__(self, *exc: object) -> None:
        assert self._env is not None
        for close in reversed(self._env.closers):
            await close()
        await self._env.store.close()
        await self._env.db.close()


def env_for(
    broker: TansuBroker, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> EnvContext:
    """The `Env` of a test on `backend` (``sqlite``, or ``postgres`` on `pg_url`)."""
    return EnvContext(broker, tmp_path, request, backend)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def drain_outbox(relay: OutboxRelay, store: EventStore) -> None:
    while await relay.run_once():
        pass
    assert (await store.outbox_stats()).backlog == 0


async def read_topic(
    config: KafkaConfig,
    topic: str,
    count: int,
    timeout: float = 15.0,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """The first `count` messages of every partition of `topic` (no group); with `until`,
    the messages read once `until` holds of them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < count and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
            if until is not None and until(records):
                break
        return records
    finally:
        await consumer.stop()


async def matches_replay(env: Env) -> bool:
    events = await all_events(env.store)
    summaries, transactions = await tables(env.db)
    return summaries == expected_summaries(events) and transactions == expected_transactions(events)


async def assert_matches_replay(env: Env, timeout: float = 20.0) -> None:
    try:
        await eventually(lambda: matches_replay(env), timeout, "the views to match a replay")
    except AssertionError as exc:
        try:
            details = await describe_mismatch(env)
        except Exception as failure:  # the details must not hide the failure itself
            details = f"(no details: {failure!r})"
        raise AssertionError(f"{exc}\n{details}") from None
    events = await all_events(env.store)
    summaries, transactions = await tables(env.db)
    assert summaries == expected_summaries(events)
    assert transactions == expected_transactions(events)
    # No duplicates: one transaction row per event of a row type.
    money = [e for e in events if e.type in ROW_TYPES]
    assert len(transactions) == len(money)


async def describe_mismatch(env: Env) -> str:
    """What the views lack or have too much of, and where the consumer says it is."""
    events = await all_events(env.store)
    summaries, transactions = await tables(env.db)
    expected = expected_transactions(events)
    by_id = {e.event_id: e for e in events}
    missing = sorted(
        (by_id[k].position, by_id[k].stream_id, by_id[k].version)
        for k in expected.keys() - transactions.keys()
        if k in by_id
    )
    extra = sorted(transactions.keys() - expected.keys())
    wrong = [k for k in expected.keys() & transactions.keys() if expected[k] != transactions[k]]
    stale = [k for k, v in expected_summaries(events).items() if summaries.get(k) != v]
    checkpoints = await env.db.fetch(
        'SELECT projection, partition, "offset" FROM kafka_checkpoints ORDER BY 1, 2'
    )
    streams = sorted({stream for _, stream, _ in missing})[:10]
    versions = [
        dict(r)
        for r in await env.db.fetch("SELECT * FROM kafka_stream_versions")
        if dict(r)["stream_id"] in streams
    ]
    return "\n".join(
        [
            *[runner_state(runner) for runner in env.runners],
            f"events {len(events)}, head position {events[-1].position if events else 0}",
            f"transactions missing {len(missing)} (position, stream, version): {missing[:20]}",
            f"transactions extra {len(extra)}, wrong {len(wrong)}; summaries wrong {len(stale)}",
            f"kafka_checkpoints: {[tuple(dict(r).values()) for r in checkpoints]}",
            f"kafka_stream_versions of those streams: {versions}",
        ]
    )


def runner_state(runner: KafkaProjectionRunner) -> str:
    """A runner's consumer: handled messages, partition states, where its task waits."""
    lines = [f"runner: handled {runner.handled}"]
    consumer = runner._consumer
    if consumer is not None:
        subscription = consumer._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        for tp in sorted(consumer.assignment()):
            state = assignment.state_value(tp) if assignment is not None else None
            lines.append(
                f"  {tp.partition}: position {getattr(state, '_position', None)},"
                f" status {getattr(state, '_status', None)}, highwater {consumer.highwater(tp)}"
            )
    task = runner._task
    if task is not None and not task.done():
        stack = io.StringIO()
        task.print_stack(limit=30, file=stack)
        lines.append(stack.getvalue())
    return "\n".join(lines)
