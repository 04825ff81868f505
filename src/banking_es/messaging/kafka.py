"""Kafka through aiokafka: the message format, the publisher, topics, a health check.

    KafkaError (aiokafka's)      the broker refused or did not answer; the caller retries
    KafkaUnavailable             no broker answered within the timeout

`KafkaPublisher.publish` returns once the broker acknowledged every message (`acks=all`),
so the relay marks rows only then; the producer starts lazily and is rebuilt after a
failure. docs/kafka.md gives the topics, keys, values and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from opentelemetry.trace import Span

from banking_es.eventstore.base import EVENTS_TOPIC, OutboxEntry, RecordedEvent
from banking_es.observability.tracing import (
    end_send_spans,
    inject_headers,
    start_send_span,
    tracing_enabled,
)

log = logging.getLogger(__name__)

Header = tuple[str, bytes]


class KafkaUnavailable(Exception):
    """No broker answered within the timeout."""


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names under one prefix."""

    prefix: str

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.events.dlq"

    @property
    def notifications(self) -> str:
        return f"{self.prefix}.notifications"

    def for_outbox(self, topic: str) -> str:
        return self.events if topic == EVENTS_TOPIC else f"{self.prefix}.{topic}"


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """What every Kafka client of the service needs; built from `Settings`."""

    bootstrap_servers: str
    topics: Topics
    idempotent: Literal["true", "false", "auto"] = "auto"
    partitions: int = 6
    replication_factor: int = 1
    request_timeout_ms: int = 10_000
    #: Consumer-group timings; tests lower them so joins and rebalances are quick.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    rebalance_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 60_000


# ---- the message format ---------------------------------------------------------------------


def encode_event(event: RecordedEvent) -> tuple[bytes, bytes, list[Header]]:
    """The key, value and headers of an event's message (API.md, "Kafka messages")."""
    value = orjson.dumps(
        {
            "event_id": event.event_id,
            "position": event.position,
            "stream_id": event.stream_id,
            "version": event.version,
            "type": event.type,
            "data": event.data,
            "metadata": event.metadata,
            "recorded_at": event.recorded_at.isoformat(),
        }
    )
    headers = [
        ("event_type", event.type.encode()),
        ("event_id", event.event_id.encode()),
        ("position", str(event.position).encode()),
    ]
    return event.stream_id.encode(), value, headers


def decode_event(value: bytes | str) -> RecordedEvent:
    """The event carried by an events message; ValueError when it is not one."""
    try:
        body = orjson.loads(value)
        return RecordedEvent(
            position=int(body["position"]),
            stream_id=str(body["stream_id"]),
            version=int(body["version"]),
            event_id=str(body["event_id"]),
            type=str(body["type"]),
            data=dict(body["data"]),
            metadata=dict(body.get("metadata") or {}),
            recorded_at=datetime.fromisoformat(body["recorded_at"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an event message: {exc}") from None


def encode_entry(entry: OutboxEntry, topics: Topics) -> tuple[str, bytes, bytes, list[Header]]:
    """Topic, key, value and headers of an outbox row."""
    if entry.event is not None:
        key, value, headers = encode_event(entry.event)
        return topics.for_outbox(entry.topic), key, value, headers
    return topics.for_outbox(entry.topic), entry.key.encode(), orjson.dumps(entry.payload), []


# ---- clients --------------------------------------------------------------------------------


async def ensure_topics(config: KafkaConfig, names: Sequence[str]) -> None:
    """Create the topics that do not exist yet (with the configured partitions)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers, request_timeout_ms=config.request_timeout_ms
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, config.partitions, config.replication_factor) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process was first
    finally:
        await admin.close()


async def check_broker(config: KafkaConfig, timeout: float) -> dict[str, Any]:
    """Ask the cluster for its metadata; raise `KafkaUnavailable` without an answer in time."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        request_timeout_ms=max(100, int(timeout * 1000)),
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            topics = await admin.list_topics()
    except (TimeoutError, KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"no Kafka broker answered: {exc or type(exc).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return {"status": "ok", "events_topic": config.topics.events in topics}


class KafkaPublisher:
    """The relay's publisher for Kafka: acks=all, idempotent per configuration (see module)."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        on_published: Callable[[str, int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._producer: AIOKafkaProducer | None = None
        #: Told (topic, count) after the broker acknowledged messages, and (topic) on failure.
        self.on_published = on_published
        self.on_error = on_error
        self._idempotent: bool | None = None
        self._topics_ready = False

    @property
    def idempotent(self) -> bool | None:
        """Whether the running producer is idempotent (None: not started yet)."""
        return self._idempotent

    async def _new_producer(self, idempotent: bool) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap_servers,
            acks="all",
            enable_idempotence=idempotent,
            request_timeout_ms=self._config.request_timeout_ms,
            linger_ms=2,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def start(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        mode = self._config.idempotent
        if mode == "auto":
            try:
                self._producer = await self._new_producer(True)
                self._idempotent = True
            except KafkaError as exc:
                # Brokers without InitProducerId (the Tansu test broker) refuse it; then
                # ordering rests on one in-flight request and duplicates on the consumers.
                log.warning("the broker refuses the idempotent producer (%r); using acks=all", exc)
                self._producer = await self._new_producer(False)
                self._idempotent = False
        else:
            self._producer = await self._new_producer(mode == "true")
            self._idempotent = mode == "true"
        if not self._topics_ready:
            await ensure_topics(
                self._config,
                [self._config.topics.events, self._config.topics.dead_letters],
            )
            self._topics_ready = True
        return self._producer

    async def send(self, topic: str, key: bytes, value: bytes, headers: list[Header]) -> None:
        """Send one message and wait for the acknowledgement."""
        producer = await self.start()
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
        except BaseException:
            await self._reset()
            raise

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        """Send every entry in order; return when the broker acknowledged all of them."""
        spans: list[Span] = []
        traced = tracing_enabled()
        try:
            # Inside: a broker that is away fails here on every attempt after the first.
            producer = await self.start()
            futures = []
            topics: Counter[str] = Counter()
            for entry in entries:
                topic, key, value, headers = encode_entry(entry, self._config.topics)
                if traced:  # the send continues the trace of the command that wrote the row
                    stored = entry.event.metadata if entry.event is not None else None
                    sent = start_send_span(topic, entry.key, stored)
                    inject_headers(headers, sent)
                    spans.append(sent)
                futures.append(await producer.send(topic, value, key=key, headers=headers))
                topics[topic] += 1
            acks = await asyncio.gather(*futures)
        except BaseException as exc:
            end_send_spans(spans, error=exc)
            if self.on_error is not None and entries:
                self.on_error(encode_entry(entries[0], self._config.topics)[0])
            # After a failure the producer may hold half-sent batches: start a fresh one, so
            # the next attempt republishes the whole batch in order.
            await self._reset()
            raise
        end_send_spans(spans, acks)
        if self.on_published is not None:
            for topic, count in topics.items():
                self.on_published(topic, count)

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        self._topics_ready = False  # a restarted broker may have lost them (Tansu keeps none)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def close(self) -> None:
        await self._reset()


async def end_offsets(config: KafkaConfig, topic: str, timeout: float = 5.0) -> dict[int, int]:
    """The end offset of every partition of `topic`, asked by a consumer of no group, for a
    process that does not consume (`banking-es projections status`); {} when the broker does
    not answer within `timeout` seconds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=config.request_timeout_ms,
    )
    try:
        async with asyncio.timeout(timeout):
            await consumer.start()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = {}
        if tps:
            async with asyncio.timeout(timeout):
                ends = await consumer.end_offsets(tps)
    except (TimeoutError, KafkaError) as exc:
        log.warning("kafka: cannot read the end offsets of %s (%s)", topic, exc)
        return {}
    finally:
        await consumer.stop()
    return {tp.partition: int(offset) for tp, offset in ends.items()}
