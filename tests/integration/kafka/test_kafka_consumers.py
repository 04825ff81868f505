"""Projections fed from Kafka (Tansu): they match a replay, ignore duplicates, spread over a
consumer group, send poison messages to the DLQ and fill gaps from the event store."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from tests.integration.kafka.kafka_support import (
    PARTITIONS,
    Env,
    assert_matches_replay,
    drain_outbox,
    eventually,
    read_topic,
)
from tests.integration.projection_support import Bank, all_events, populate, tables

from banking_es.db.base import Connection
from banking_es.domain.events import MoneyDeposited
from banking_es.eventstore.base import RecordedEvent
from banking_es.messaging.dead_letters import OPEN, RETRIED
from banking_es.messaging.kafka import KafkaPublisher
from banking_es.messaging.replay import replay_events
from banking_es.projections import AccountSummariesProjection, TransactionsProjection
from banking_es.projections.base import Projection
from banking_es.projections.kafka_applier import KafkaProjectionApplier
from banking_es.projections.kafka_runner import LOG_RESET_CHECK, KafkaProjectionRunner

pytestmark = pytest.mark.kafka

# ---- consumers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_projections_from_kafka_match_a_replay_and_ignore_duplicates(env: Env) -> None:
    await populate(env.store, ops=80, holds=True)  # hold rows settled in later messages too
    relay = env.relay()
    await drain_outbox(relay, env.store)
    runner = env.runner()
    runner.start()
    await assert_matches_replay(env)
    # A replay of the whole history (a new downstream consumer) reaches our consumer too:
    # every copy is recognised by (stream, version).
    events = await all_events(env.store)
    sent = await replay_events(env.store, env.config, 0, events[-1].position, None)
    assert sent == len(events)
    await eventually(lambda: _handled_at_least(runner, 2 * len(events)), 20, "the replayed copies")
    await assert_matches_replay(env)


async def _handled_at_least(runner: KafkaProjectionRunner, count: int) -> bool:
    return runner.handled >= count


async def test_a_caught_up_consumer_reads_each_message_once_while_idle(env: Env) -> None:
    """Batches of several messages (Tansu lists their logs' ends too early) are not taken for
    a lost log: the idle consumer does not read its partitions again from the start."""
    await populate(env.store, ops=40)
    await drain_outbox(env.relay(), env.store)
    events = await all_events(env.store)
    runner = env.runner()
    runner.start()
    await assert_matches_replay(env)
    await eventually(lambda: _handled_at_least(runner, len(events)), 20, "every event")
    await asyncio.sleep(3 * LOG_RESET_CHECK)  # idle: the log-reset check runs
    assert runner.handled == len(events)


async def test_a_relay_killed_between_publish_and_mark_causes_no_double_effect(
    env: Env,
) -> None:
    await populate(env.store, ops=40)
    runner = env.runner()
    runner.start()
    # The relay published, and died before it marked the rows.
    publisher = KafkaPublisher(env.config)
    env.closers.append(publisher.close)
    pending = await env.store.outbox_pending(1000)
    await publisher.publish(pending)
    assert (await env.store.outbox_stats()).backlog == len(pending)
    # The next relay publishes the same rows again: each event is delivered twice.
    relay = env.relay()
    await drain_outbox(relay, env.store)
    events = await all_events(env.store)
    records = await read_topic(env.config, env.config.topics.events, 2 * len(events))
    assert len(records) == 2 * len(events)
    await eventually(lambda: _handled_at_least(runner, 2 * len(events)), 20, "both copies")
    await assert_matches_replay(env)


async def test_a_consumer_group_spreads_partitions_and_rebalances(env: Env) -> None:
    bank = await populate(env.store, ops=30)
    relay = env.relay()
    relay.start()
    first = env.runner()
    first.start()
    await assert_matches_replay(env)
    second = env.runner()
    second.start()

    async def split() -> bool:
        a, b = first.assignment, second.assignment
        return bool(a) and bool(b) and not (a & b) and len(a | b) == PARTITIONS

    await eventually(split, 30, "the partitions to be split between two consumers")
    await bank.random_ops(40)
    await assert_matches_replay(env)
    assert first.handled > 0
    handled_before = second.handled
    await bank.random_ops(40)
    await assert_matches_replay(env)
    assert second.handled > handled_before  # both take part
    await first.stop()

    async def all_to_second() -> bool:
        return len(second.assignment) == PARTITIONS

    await eventually(all_to_second, 30, "the survivor to take every partition")
    await bank.random_ops(30)
    await assert_matches_replay(env)


# ---- dead letters ---------------------------------------------------------------------------


class Breakable:
    """A projection that fails on events described "poison" until it is fixed."""

    def __init__(self, inner: Projection) -> None:
        self._inner = inner
        self.name = inner.name
        self.broken = True

    async def apply(
        self,
        conn: Connection,
        events: Sequence[RecordedEvent],
        *,
        only_types: frozenset[str] | None = None,
    ) -> None:
        if self.broken and any(e.data.get("description") == "poison" for e in events):
            raise RuntimeError("cannot handle poison")
        await self._inner.apply(conn, events, only_types=only_types)

    async def reset(
        self, conn: Connection, from_position: int, types: frozenset[str] | None
    ) -> None:
        await self._inner.reset(conn, from_position, types)


async def test_a_poison_message_goes_to_the_dlq_and_is_retried_after_a_fix(env: Env) -> None:
    bank = Bank(env.store, random.Random(3))
    victim = await bank.open()
    bystander = await bank.open()
    await bank._append([(victim, MoneyDeposited(bank._money(1, 5), "poison"))])
    await bank.deposit(victim)  # parked behind the poison message
    for _ in range(5):
        await bank.deposit(bystander)  # other keys go on
    breakable = Breakable(AccountSummariesProjection())
    relay = env.relay()
    await drain_outbox(relay, env.store)
    runner = env.runner([breakable, TransactionsProjection()], max_attempts=3)
    runner.start()
    letters = runner.applier.dead_letters()

    async def two_letters() -> bool:
        return len(await letters.find()) == 2

    await eventually(two_letters, 20, "the dead letters")
    poison, parked = await letters.find()
    assert poison.key == parked.key == victim.id
    assert poison.attempts == 3
    assert "poison" in poison.error
    assert parked.attempts == 0
    assert f"dead letter {poison.id}" in parked.error
    assert poison.headers["event_type"] == "MoneyDeposited"

    async def bystander_done() -> bool:
        summaries, _ = await tables(env.db)
        row = summaries.get(bystander.id)
        return row is not None and row["version"] == bystander.version

    await eventually(bystander_done, 20, "the other account's events")
    summaries, transactions = await tables(env.db)
    assert summaries[victim.id]["version"] == 1  # nothing after the poison was applied
    assert not [
        t for t in transactions.values() if t["account_id"] == victim.id and t["version"] > 1
    ]
    dlq = await read_topic(env.config, env.config.topics.dead_letters, 2)
    assert len(dlq) == 2
    headers = dict(dlq[0].headers)
    assert headers["attempts"] == b"3"
    assert b"poison" in headers["error"]

    breakable.broken = False  # the fix
    assert await letters.retry(poison.id) == [poison.id, parked.id]
    assert [letter.status for letter in await letters.find(status=None)] == [RETRIED, RETRIED]
    assert await letters.find(status=OPEN) == []
    await bank.deposit(victim)  # later events of the key flow again
    await drain_outbox(relay, env.store)
    await assert_matches_replay(env)


async def test_a_gap_in_a_stream_is_filled_from_the_event_store(env: Env) -> None:
    await populate(env.store, ops=40)
    events = await all_events(env.store)
    applier = KafkaProjectionApplier(
        env.db,
        env.store,
        [AccountSummariesProjection(), TransactionsProjection()],
        env.config.topics.events,
    )
    # Only each stream's last event arrives (the ones before it never did): the consumer
    # reads the missing versions from the store and applies them first, in order.
    last = {e.stream_id: e for e in events}
    async with env.db.transaction() as conn:
        await applier.apply_events(conn, list(last.values()))
    await assert_matches_replay(env, timeout=1)
