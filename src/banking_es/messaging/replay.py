"""Republishing stored events to Kafka (`banking-es outbox replay`).

The events are read from the store in position order, in batches, and published with the
same key, value and headers as the relay uses, so a new downstream consumer can read the
history; the service's own consumers recognise the copies by (stream, version).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from banking_es.db.base import Database
from banking_es.eventstore.base import EVENTS_TOPIC, EventStore, OutboxEntry
from banking_es.messaging.kafka import KafkaConfig, KafkaPublisher

BATCH = 1000


async def count_events(db: Database, after: int, last: int, types: Sequence[str] | None) -> int:
    """How many events with `after < position <= last` (of `types`, when given) exist."""
    if types:
        marks = ", ".join(f"${i + 3}" for i in range(len(types)))
        value = await db.fetchval(
            "SELECT count(*) FROM events WHERE position > $1 AND position <= $2"
            f" AND type IN ({marks})",
            after,
            last,
            *types,
        )
    else:
        value = await db.fetchval(
            "SELECT count(*) FROM events WHERE position > $1 AND position <= $2", after, last
        )
    return int(value or 0)


async def replay_events(
    store: EventStore,
    config: KafkaConfig,
    after: int,
    last: int,
    types: Sequence[str] | None,
    progress: Callable[[int], None] | None = None,
    *,
    publisher: KafkaPublisher | None = None,
) -> int:
    """Publish the events with `after < position <= last` (of `types`); return how many."""
    own = publisher is None
    publisher = publisher or KafkaPublisher(config)
    sent = 0
    cursor = after
    try:
        while cursor < last:
            events = [
                e for e in await store.read_all(cursor, BATCH, types or None) if e.position <= last
            ]
            if not events:
                break
            now = datetime.now(UTC)
            await publisher.publish(
                [OutboxEntry(0, EVENTS_TOPIC, e.stream_id, None, e, now) for e in events]
            )
            sent += len(events)
            cursor = events[-1].position
            if progress is not None:
                progress(sent)
    finally:
        if own:
            await publisher.close()
    return sent
