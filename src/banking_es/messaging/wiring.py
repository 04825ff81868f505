"""The Kafka side of the service, built by `bootstrap` when `KAFKA_BOOTSTRAP_SERVERS` is set.

It replaces the log publisher and the store-following projection runner:

- the outbox relay publishes to Kafka, as the single leader of the lease `outbox-relay`;
- the projections are driven by a consumer group (`projections.kafka_runner`);
- every process invalidates its L1 cache from the events topic (`cache_invalidation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from banking_es.application.ports import Clock
from banking_es.config import Settings
from banking_es.db.base import Database
from banking_es.eventstore.base import EventStore
from banking_es.messaging.cache_invalidation import CacheInvalidator, Invalidates
from banking_es.messaging.kafka import KafkaConfig, KafkaPublisher, Topics, check_broker
from banking_es.messaging.leader import LeaseElection
from banking_es.messaging.relay import RELAY_LEASE, OutboxRelay
from banking_es.projections.base import Projection
from banking_es.projections.checkpoints import ProjectionStatus
from banking_es.projections.kafka_applier import KafkaProjectionApplier
from banking_es.projections.kafka_runner import KafkaProjectionRunner


def kafka_config(settings: Settings, **overrides: Any) -> KafkaConfig:
    if not settings.kafka_bootstrap_servers:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set")
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "topics": Topics(settings.kafka_topic_prefix),
        "idempotent": settings.kafka_idempotent_producer,
        "partitions": settings.kafka_topic_partitions,
        "replication_factor": settings.kafka_replication_factor,
    }
    options.update(overrides)
    return KafkaConfig(**options)


def build_relay(
    settings: Settings, db: Database, store: EventStore, clock: Clock, config: KafkaConfig
) -> OutboxRelay:
    """The relay that publishes to Kafka while it holds the relay lease."""
    return OutboxRelay(
        store,
        KafkaPublisher(config),
        clock,
        leader=LeaseElection(db, RELAY_LEASE, clock, ttl=settings.kafka_relay_lease_ttl),
    )


@dataclass
class KafkaMessaging:
    """The relay, the projection consumer and the cache invalidator of one process."""

    config: KafkaConfig
    relay: OutboxRelay
    projections: KafkaProjectionRunner
    invalidator: CacheInvalidator

    def start(self) -> None:
        self.relay.start()
        self.projections.start()
        self.invalidator.start()

    async def close(self) -> None:
        await self.invalidator.stop()
        await self.projections.stop()
        await self.relay.stop()
        publisher = self.relay.publisher
        if isinstance(publisher, KafkaPublisher):
            await publisher.close()

    async def health(self, timeout: float = 0.5) -> dict[str, Any]:
        result = await check_broker(self.config, timeout)
        publisher = self.relay.publisher
        if isinstance(publisher, KafkaPublisher):
            result["idempotent_producer"] = publisher.idempotent
        result["assigned_partitions"] = len(self.projections.assignment)
        return result

    async def projection_status(self, store: EventStore) -> list[ProjectionStatus]:
        return await self.projections.status(store)


def build_kafka(
    settings: Settings,
    db: Database,
    store: EventStore,
    projections: Sequence[Projection],
    cache: Invalidates,
    clock: Clock,
    **config_overrides: Any,
) -> KafkaMessaging:
    config = kafka_config(settings, **config_overrides)
    relay = build_relay(settings, db, store, clock, config)
    publisher = relay.publisher
    runner = KafkaProjectionRunner(
        KafkaProjectionApplier(db, store, projections, config.topics.events),
        config,
        publisher=publisher if isinstance(publisher, KafkaPublisher) else None,
        max_attempts=settings.dlq_max_attempts,
    )
    return KafkaMessaging(config, relay, runner, CacheInvalidator(cache, config))
