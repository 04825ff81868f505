"""The outbox relay with a real broker (Tansu): every event in order per account, one leader."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka.errors import KafkaError
from tests.integration.kafka.kafka_support import Env, drain_outbox, read_topic
from tests.integration.projection_support import Bank, all_events, populate
from tests.server import free_port

from banking_es.eventstore.base import OutboxEntry
from banking_es.messaging.kafka import KafkaConfig, KafkaPublisher, Topics

pytestmark = pytest.mark.kafka


async def test_relay_publishes_every_event_in_order_per_account_with_headers(env: Env) -> None:
    await populate(env.store, ops=60)
    relay = env.relay()
    await drain_outbox(relay, env.store)
    events = await all_events(env.store)
    assert isinstance(relay.publisher, KafkaPublisher)
    assert relay.publisher.idempotent is False  # Tansu refuses InitProducerId: auto fell back

    records = await read_topic(env.config, env.config.topics.events, len(events))
    assert len(records) == len(events)
    by_id = {e.event_id: e for e in events}
    per_key: dict[str, list[int]] = {}
    partition_of: dict[str, set[int]] = {}
    for record in records:
        value = orjson.loads(record.value)
        event = by_id[value["event_id"]]
        headers = {k: v.decode() for k, v in record.headers}
        assert record.key.decode() == event.stream_id
        assert headers == {
            "event_type": event.type,
            "event_id": event.event_id,
            "position": str(event.position),
        }
        assert value["version"] == event.version
        assert value["position"] == event.position
        assert value["data"] == event.data
        per_key.setdefault(event.stream_id, []).append(event.version)
        partition_of.setdefault(event.stream_id, set()).add(record.partition)
    for stream, versions in per_key.items():
        assert versions == list(range(1, len(versions) + 1)), stream
        assert len(partition_of[stream]) == 1
    assert len({p for parts in partition_of.values() for p in parts}) > 1


async def test_one_relay_leads_and_a_standby_takes_over_when_it_dies(env: Env) -> None:
    bank = await populate(env.store, ops=10)
    # The lease must outlast the leader's first run, which also starts its producer and
    # creates the topics: over a second on a busy machine.
    first = env.relay(holder="first", ttl=5.0)
    second = env.relay(holder="second", ttl=5.0)
    assert await first.run_once() > 0
    await populate_more(bank, 5)
    assert await second.run_once() == 0  # stands by while the lease is held
    assert (await env.store.outbox_stats()).backlog > 0
    # The leader "dies": it neither renews nor releases. After the lease expires the
    # stand-by takes over and publishes the rest.
    await asyncio.sleep(5.1)
    await drain_outbox(second, env.store)
    assert await first.run_once() == 0  # the old leader now stands by
    events = await all_events(env.store)
    records = await read_topic(env.config, env.config.topics.events, len(events))
    assert sorted(orjson.loads(r.value)["position"] for r in records) == [
        e.position for e in events
    ]


async def populate_more(bank: Bank, ops: int) -> None:
    await bank.random_ops(ops)


async def test_each_failed_publish_attempt_is_counted_also_when_the_broker_is_away() -> None:
    """A broker that does not answer fails the producer's start: every attempt counts."""
    failed: list[str] = []
    topics = Topics("away")
    config = KafkaConfig(
        bootstrap_servers=f"127.0.0.1:{free_port()}", topics=topics, request_timeout_ms=1000
    )
    publisher = KafkaPublisher(config, on_error=failed.append)
    entry = OutboxEntry(1, "notifications", "k", {"n": 1}, None, datetime.now(UTC))
    for _ in range(2):
        with pytest.raises(KafkaError):
            await publisher.publish([entry])
    await publisher.close()
    assert failed == [topics.for_outbox("notifications")] * 2
