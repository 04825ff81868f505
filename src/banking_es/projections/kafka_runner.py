"""Runs the projections from Kafka: a consumer group on `<prefix>.events`.

Used instead of the store-following `ProjectionRunner` when `KAFKA_BOOTSTRAP_SERVERS` is set.
A batch of one partition is applied in one database transaction that parks messages whose key
has an open dead letter, drops duplicates and fills gaps by (stream, version)
(`kafka_stream_versions`), applies the events and writes the (projection, partition)
checkpoints with the rows; only then is the offset committed to Kafka. A failing batch is
retried one message at a time, with backoff, then dead-lettered; a database that is away is
retried without counting. Details: docs/kafka.md ("Consumers").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from banking_es.application.ports import ProjectionStatus
from banking_es.eventstore.base import EventStore
from banking_es.messaging import dead_letters
from banking_es.messaging.kafka import KafkaConfig, KafkaPublisher
from banking_es.observability.tracing import kafka_process_span, tracing_enabled
from banking_es.projections.kafka_applier import (
    CONSUMER,
    TRANSIENT,
    KafkaProjectionApplier,
    Message,
    message_of,
)
from banking_es.tasks import cancel

log = logging.getLogger(__name__)

#: Seconds without messages after which the consumer checks for a log that was reset.
LOG_RESET_CHECK = 2.0
#: Seconds between two readings of the consumer lag when no batch came (a scrape interval).
LAG_REFRESH = 5.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        on_assigned: Callable[[set[TopicPartition]], Awaitable[None]],
        on_revoked: Callable[[], None],
    ) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._on_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._on_assigned(assigned)


class KafkaProjectionRunner:
    """The consumer-group loop around a `KafkaProjectionApplier` (see the module docstring)."""

    def __init__(
        self,
        applier: KafkaProjectionApplier,
        config: KafkaConfig,
        *,
        publisher: KafkaPublisher | None = None,
        max_attempts: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        batch_size: int = 500,
        group_id: str | None = None,
        on_outcome: Callable[[str, str, int], None] | None = None,
        on_dead_letter: Callable[[str, str, int], None] | None = None,
        on_lag: Callable[[str, int, int], None] | None = None,
        on_assigned: Callable[[int], None] | None = None,
    ) -> None:
        self.applier = applier
        self._config = config
        self._publisher = publisher
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._batch = batch_size
        self.group_id = group_id or f"{config.topics.prefix}.projections"
        #: Told (topic, outcome, count) of messages handled: ok, duplicate (dropped),
        #: dead_letter (given up or parked), retry (to be applied again); (topic, error,
        #: attempts) of each message put in the dead letters; (topic, partition, lag) of
        #: each assigned partition; the number of partitions assigned (metrics).
        self.on_outcome = on_outcome
        self.on_dead_letter = on_dead_letter
        self.on_lag = on_lag
        self.on_assigned = on_assigned
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        #: Messages applied (or parked, or dead-lettered) by this process.
        self.handled = 0
        self._lag_due = False

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="kafka-projections")

    async def stop(self) -> None:
        self._stopping.set()
        await cancel(self._task)
        self._task = None

    def _assigned(self, count: int) -> None:
        self._lag_due = True  # new partitions: report their lag without waiting
        if self.on_assigned is not None:
            self.on_assigned(count)

    def _outcome(self, topic: str, outcome: str, count: int) -> None:
        if self.on_outcome is not None and count:
            self.on_outcome(topic, outcome, count)

    async def _seek_to_checkpoints(self, assigned: set[TopicPartition]) -> None:
        self._assigned(len(assigned))
        if self._consumer is None:
            return
        try:
            checkpoints = await self.applier.checkpoints()
        except Exception as exc:  # the committed offsets (or the start) will do
            log.warning("kafka projections: cannot read checkpoints (%s)", exc)
            return
        for tp in assigned:
            if tp.partition not in checkpoints:
                continue
            try:
                committed = await self._consumer.committed(tp)
            except KafkaError:
                committed = 0
            if committed is None:
                # The broker lost the group's offsets (a new cluster, or a test broker that
                # keeps nothing): its log is not the one our checkpoint counts. Read it from
                # the start; duplicates are dropped by (stream, version).
                log.warning("kafka projections: %s has no committed offset; from start", tp)
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, checkpoints[tp.partition] + 1)

    async def _connect(self) -> AIOKafkaConsumer:
        delay = self._backoff
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._config.bootstrap_servers,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=self._config.session_timeout_ms,
                heartbeat_interval_ms=self._config.heartbeat_interval_ms,
                rebalance_timeout_ms=self._config.rebalance_timeout_ms,
                max_poll_interval_ms=self._config.max_poll_interval_ms,
                request_timeout_ms=max(
                    self._config.request_timeout_ms, self._config.session_timeout_ms + 1000
                ),
            )
            listener = _Rebalance(self._seek_to_checkpoints, lambda: self._assigned(0))
            consumer.subscribe([self.applier.topic], listener=listener)
            try:
                await consumer.start()
                return consumer
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                if not isinstance(exc, KafkaError | OSError):
                    raise
                log.warning("kafka projections: cannot connect (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)

    async def _run(self) -> None:
        self._consumer = consumer = await self._connect()
        loop = asyncio.get_running_loop()
        idle_since = lag_read = loop.time()
        try:
            while not self._stopping.is_set():
                if self._lag_due or loop.time() - lag_read > LAG_REFRESH:
                    self._lag_due, lag_read = False, loop.time()
                    await self._read_lag(consumer)
                try:
                    batches = await consumer.getmany(timeout_ms=200, max_records=self._batch)
                except KafkaError as exc:
                    log.warning("kafka projections: fetch failed (%s)", exc)
                    await asyncio.sleep(self._backoff)
                    continue
                if batches:
                    await asyncio.gather(
                        *(self._partition(consumer, tp, recs) for tp, recs in batches.items())
                    )
                    idle_since = asyncio.get_running_loop().time()
                elif asyncio.get_running_loop().time() - idle_since > LOG_RESET_CHECK:
                    idle_since = asyncio.get_running_loop().time()
                    await self._check_log_reset(consumer)
        finally:
            self._consumer = None
            self._assigned(0)
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _read_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Report end offset minus position for every assigned partition."""
        if self.on_lag is None:
            return
        assigned = list(consumer.assignment())
        if not assigned:
            return
        try:
            async with asyncio.timeout(1.0):
                ends = await consumer.end_offsets(assigned)
                for tp in assigned:
                    position = await consumer.position(tp)
                    self.on_lag(tp.topic, tp.partition, max(0, ends[tp] - position))
        except (TimeoutError, KafkaError) as exc:
            log.debug("kafka projections: cannot read the consumer lag (%s)", exc)

    async def _check_log_reset(self, consumer: AIOKafkaConsumer) -> None:
        """Go back to the start of a partition whose log ends before our position.

        Kafka answers such a fetch with OFFSET_OUT_OF_RANGE (`auto_offset_reset` applies), but
        a broker that lost its log (a wiped cluster; Tansu after a restart) may wait until the
        new log passes the old position. The end is the larger of the listed one and the last
        fetch's high watermark: Tansu lists a log whose last batch has n messages n - 1 short.
        """
        assigned = list(consumer.assignment())
        if not assigned:
            return
        try:
            async with asyncio.timeout(2.0):
                ends = await consumer.end_offsets(assigned)
            for tp in assigned:
                if await consumer.position(tp) > max(ends[tp], consumer.highwater(tp) or 0):
                    log.warning("kafka projections: the log of %s was reset; from start", tp)
                    await consumer.seek_to_beginning(tp)
        except (TimeoutError, KafkaError) as exc:
            log.debug("kafka projections: cannot check the log ends (%s)", exc)

    async def _partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Any
    ) -> None:
        messages = [message_of(r) for r in records]
        if not messages:
            return
        carriers = [m.headers for m in messages] if tracing_enabled() else []
        with kafka_process_span(
            tp.topic, tp.partition, messages[0].offset, carriers, group=self.group_id
        ):
            outcomes = await self._apply_until_done(tp, messages)
        for outcome, count in outcomes.items():
            self._outcome(tp.topic, outcome, count)
        self.handled += len(messages)
        with contextlib.suppress(KafkaError, AssertionError):
            # Only a hint for tools: the checkpoint in the database is what counts.
            await consumer.commit({tp: messages[-1].offset + 1})
        end = consumer.highwater(tp)  # from the fetch just answered: no request
        if self.on_lag is not None and end is not None:
            self.on_lag(tp.topic, tp.partition, max(0, end - messages[-1].offset - 1))

    async def _apply_until_done(self, tp: TopicPartition, messages: list[Message]) -> Counter[str]:
        delay = self._backoff
        while True:
            try:
                return await self._apply(messages)
            except TRANSIENT as exc:  # the database is away: not the messages' fault
                log.warning("kafka projections: %s; retrying in %.1f s", exc, delay)
            except Exception:
                # Unexpected (e.g. the dead letter could not be written): never skip the
                # batch; it is applied again (duplicates are dropped by version).
                log.exception("kafka projections: %s failed; retrying in %.1f s", tp, delay)
            self._outcome(tp.topic, "retry", len(messages))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)

    async def _apply(self, messages: list[Message]) -> Counter[str]:
        """Apply a partition's batch; the messages counted by outcome."""
        partition = messages[0].partition
        try:
            parked, duplicates = await self.applier.apply_batch(partition, messages)
        except TRANSIENT:
            raise
        except Exception as exc:
            log.warning("kafka projections: batch failed (%s); one message at a time", exc)
            outcomes: Counter[str] = Counter()
            for message in messages:
                outcomes[await self._apply_one(message)] += 1
            return outcomes
        for message in parked:
            await self._parked(message)
        ok = len(messages) - len(parked) - duplicates
        return Counter({"ok": ok, "duplicate": duplicates, "dead_letter": len(parked)})

    async def _parked(self, message: Message) -> None:
        if self.on_dead_letter is not None:
            self.on_dead_letter(message.topic, "parked", 0)
        await self._to_dlq_topic(message, "parked", 0)

    async def _apply_one(self, message: Message) -> str:
        """Apply one message, retrying; its outcome (ok, duplicate or dead_letter)."""
        attempts = 0
        delay = self._backoff
        while True:
            try:
                parked, duplicates = await self.applier.apply_batch(message.partition, [message])
                for item in parked:
                    await self._parked(item)
                return "dead_letter" if parked else "duplicate" if duplicates else "ok"
            except TRANSIENT:
                raise
            except Exception as exc:
                attempts += 1
                error = str(exc) or type(exc).__name__
                if attempts >= self._max_attempts:
                    await self._dead_letter(message, error, attempts)
                    return "dead_letter"
                self._outcome(message.topic, "retry", 1)
                log.warning(
                    "kafka projections: offset %d of partition %d failed (attempt %d): %s",
                    message.offset,
                    message.partition,
                    attempts,
                    error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)

    async def _dead_letter(self, message: Message, error: str, attempts: int) -> None:
        async with self.applier.db.transaction() as conn:
            letter = await dead_letters.add_letter(
                conn,
                consumer=CONSUMER,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value.decode(errors="replace"),
                headers=message.headers,
                error=error,
                attempts=attempts,
            )
            await self.applier.write_checkpoints(conn, message.partition, message.offset, None)
        log.error(
            "kafka projections: offset %d of partition %d is dead letter %d after %d attempts: %s",
            message.offset,
            message.partition,
            letter,
            attempts,
            error,
        )
        if self.on_dead_letter is not None:
            self.on_dead_letter(message.topic, error, attempts)
        await self._to_dlq_topic(message, error, attempts)

    async def _to_dlq_topic(self, message: Message, error: str, attempts: int) -> None:
        if self._publisher is None:
            return
        headers = [(k, v.encode()) for k, v in message.headers.items()]
        headers += [("error", error.encode()[:1000]), ("attempts", str(attempts).encode())]
        try:
            await self._publisher.send(
                self._config.topics.dead_letters, message.key.encode(), message.value, headers
            )
        except Exception as exc:  # the table is the record; the topic is for other tools
            log.warning("kafka projections: cannot write to the DLQ topic (%s)", exc)

    # ---- status -------------------------------------------------------------------------

    async def status(
        self, store: EventStore, ends: dict[int, int] | None = None
    ) -> list[ProjectionStatus]:
        """Lag per projection (`KafkaProjectionApplier.status`); `ends` (partition -> end
        offset) defaults to what this process's consumer sees; a process that does not
        consume passes `end_offsets(...)`."""
        if ends is None:
            ends = await self._end_offsets()
        return await self.applier.status(store, ends)

    async def _end_offsets(self) -> dict[int, int]:
        consumer = self._consumer
        if consumer is None:
            return {}
        partitions = consumer.partitions_for_topic(self.applier.topic) or set()
        tps = [TopicPartition(self.applier.topic, p) for p in partitions]
        if not tps:
            return {}
        try:
            async with asyncio.timeout(0.5):
                ends = await consumer.end_offsets(tps)
        except (TimeoutError, KafkaError):
            return {}
        return {tp.partition: int(offset) for tp, offset in ends.items()}
