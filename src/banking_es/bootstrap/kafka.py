"""The Kafka side of the service, built when `KAFKA_BOOTSTRAP_SERVERS` is set.

It replaces the log publisher and the store-following projection runner:
- the outbox relay publishes to Kafka, as the single leader of the lease `outbox-relay`;
- the projections are driven by a consumer group (`projections.kafka_runner`);
- every process invalidates its L1 cache from the events topic (`cache_invalidation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from banking_es.application.ports import Clock, ProjectionStatus
from banking_es.config import Settings
from banking_es.db.base import Database
from banking_es.db.lease import LeaseElection
from banking_es.eventstore.base import EventStore
from banking_es.messaging.cache_invalidation import CacheInvalidator, Invalidates
from banking_es.messaging.kafka import KafkaConfig, KafkaPublisher, Topics, check_broker
from banking_es.messaging.relay import RELAY_LEASE, OutboxRelay
from banking_es.observability.metrics import Metrics
from banking_es.projections import default_projections
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
    settings: Settings,
    db: Database,
    store: EventStore,
    clock: Clock,
    config: KafkaConfig,
    metrics: Metrics | None = None,
) -> OutboxRelay:
    """The relay that publishes to Kafka while it holds the relay lease (`metrics`: counts
    what it publishes and whether it leads)."""
    counters: dict[str, Any] = {}
    on_change = None
    if metrics is not None:
        counters = {
            "on_published": lambda topic, n: metrics.kafka_published.labels(topic).inc(n),
            "on_error": lambda topic: metrics.kafka_publish_errors.labels(topic).inc(),
        }
        on_change = metrics.leader_role("relay")
    publisher = KafkaPublisher(config, **counters)
    return OutboxRelay(
        store,
        publisher,
        clock,
        leader=LeaseElection(
            db, RELAY_LEASE, clock, ttl=settings.kafka_relay_lease_ttl, on_change=on_change
        ),
    )


def build_applier(
    settings: Settings, db: Database, store: EventStore, topics: Topics | None = None
) -> KafkaProjectionApplier:
    """Applies the events topic to the default projections and keeps their dead letters
    (the CLI reads those without a broker: `topics` defaults to the settings' prefix)."""
    topics = topics or Topics(settings.kafka_topic_prefix)
    return KafkaProjectionApplier(db, store, default_projections(), topics.events)


def build_kafka_runner(
    settings: Settings,
    db: Database,
    store: EventStore,
    config: KafkaConfig,
    *,
    publisher: KafkaPublisher | None = None,
    metrics: Metrics | None = None,
) -> KafkaProjectionRunner:
    """The projections' consumer (`publisher`: where it sends retries and dead letters)."""
    group = f"{config.topics.prefix}.projections"
    counters: dict[str, Any] = {}
    if metrics is not None:
        metrics.leader_role("projections")  # the consumer's assignment sets it
        # At 0 from the start: `increase()` cannot see a series that is born at 1, so the
        # first dead letter after a start would never fire BankingDeadLetters.
        metrics.dead_letters.labels(config.topics.events)
        counters = {
            "on_outcome": lambda topic, outcome, n: metrics.kafka_consumed.labels(
                topic, group, outcome
            ).inc(n),
            "on_dead_letter": lambda topic, error, attempts: metrics.dead_letters.labels(
                topic
            ).inc(),
            "on_lag": lambda topic, partition, lag: metrics.kafka_consumer_lag.labels(
                topic, group, str(partition)
            ).set(lag),
            "on_assigned": lambda count: metrics.leader.labels("projections").set(min(count, 1)),
        }
    return KafkaProjectionRunner(
        build_applier(settings, db, store, config.topics),
        config,
        publisher=publisher,
        max_attempts=settings.dlq_max_attempts,
        group_id=group,
        **counters,
    )


@dataclass
class KafkaMessaging:
    """The relay, the projection consumer and the cache invalidator of one process."""

    config: KafkaConfig
    relay: OutboxRelay
    projections: KafkaProjectionRunner
    invalidator: CacheInvalidator
    store: EventStore

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

    async def status(self) -> list[ProjectionStatus]:
        """The projections' status as the consumer group sees it (readiness, metrics)."""
        return await self.projections.status(self.store)


def build_kafka(
    settings: Settings,
    db: Database,
    store: EventStore,
    cache: Invalidates,
    clock: Clock,
    metrics: Metrics | None = None,
    **config_overrides: Any,
) -> KafkaMessaging:
    config = kafka_config(settings, **config_overrides)
    relay = build_relay(settings, db, store, clock, config, metrics)
    publisher = relay.publisher
    runner = build_kafka_runner(
        settings,
        db,
        store,
        config,
        publisher=publisher if isinstance(publisher, KafkaPublisher) else None,
        metrics=metrics,
    )
    return KafkaMessaging(config, relay, runner, CacheInvalidator(cache, config), store)
