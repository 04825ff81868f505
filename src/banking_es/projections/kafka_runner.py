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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from banking_es.db.base import Connection, Database, DatabaseUnavailable
from banking_es.eventstore.base import EventStore, RecordedEvent, StoreUnavailable
from banking_es.messaging import dead_letters
from banking_es.messaging.kafka import KafkaConfig, KafkaPublisher, decode_event
from banking_es.projections.base import Projection
from banking_es.projections.runner import ProjectionStatus
from banking_es.tasks import cancel

log = logging.getLogger(__name__)

#: The name under which this consumer keeps stream versions and dead letters.
CONSUMER = "projections"
TRANSIENT = (DatabaseUnavailable, StoreUnavailable)
#: Seconds without messages after which the consumer checks for a log that was reset.
LOG_RESET_CHECK = 2.0
#: Seconds between two readings of the consumer lag when no batch came (a scrape interval).
LAG_REFRESH = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    """What the consumer needs of a Kafka record (also rebuilt from a dead letter)."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, str]


def _message(record: Any) -> Message:
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=(record.key or b"").decode(errors="replace"),
        value=record.value or b"",
        headers={k: v.decode(errors="replace") for k, v in (record.headers or ())},
    )


class KafkaProjectionApplier:
    """Applies event messages to the projections, exactly once (steps 1-4 of the module)."""

    def __init__(
        self, db: Database, store: EventStore, projections: Sequence[Projection], topic: str
    ) -> None:
        self._db = db
        self._store = store
        self._projections = list(projections)
        self.topic = topic

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._projections]

    @property
    def db(self) -> Database:
        return self._db

    async def apply_batch(
        self, partition: int, messages: Sequence[Message]
    ) -> tuple[list[Message], int]:
        """Apply one partition's messages in one transaction; return the parked ones and
        the number of duplicates dropped."""
        events = [decode_event(m.value) for m in messages]  # ValueError: a poison message
        async with self._db.transaction() as conn:
            blocked = await dead_letters.open_keys(conn, CONSUMER, [m.key for m in messages])
            parked: list[Message] = []
            ready: list[RecordedEvent] = []
            for message, event in zip(messages, events, strict=True):
                if message.key in blocked:
                    await dead_letters.add_letter(
                        conn,
                        consumer=CONSUMER,
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=message.key,
                        value=message.value.decode(errors="replace"),
                        headers=message.headers,
                        error=f"parked behind dead letter {blocked[message.key]}",
                        attempts=0,
                    )
                    parked.append(message)
                else:
                    ready.append(event)
            duplicates = await self.apply_events(conn, ready)
            last = ready[-1].recorded_at if ready else None
            await self.write_checkpoints(conn, partition, messages[-1].offset, last)
        return parked, duplicates

    async def apply_events(self, conn: Connection, events: Sequence[RecordedEvent]) -> int:
        """Drop duplicates, fill gaps from the store, apply, and record the stream versions;
        return the number of duplicates dropped."""
        if not events:
            return 0
        streams = list(dict.fromkeys(e.stream_id for e in events))
        known: dict[str, int] = {}
        for stream in streams:
            value = await conn.fetchval(
                "SELECT version FROM kafka_stream_versions WHERE consumer = $1 AND stream_id = $2",
                CONSUMER,
                stream,
            )
            known[stream] = int(value) if value is not None else 0
        start = dict(known)
        todo: list[RecordedEvent] = []
        duplicates = 0
        for event in events:
            current = known[event.stream_id]
            if event.version <= current:
                duplicates += 1
                continue
            if event.version > current + 1:
                missing = await self._store.read_stream(
                    event.stream_id, current, to_version=event.version - 1
                )
                if len(missing) != event.version - 1 - current:
                    raise StoreUnavailable(
                        f"stream {event.stream_id}: versions {current + 1}..{event.version - 1}"
                        " are not readable yet"
                    )
                todo.extend(missing)
            todo.append(event)
            known[event.stream_id] = event.version
        if not todo:
            return duplicates
        for projection in self._projections:
            await projection.apply(conn, todo)
        for stream, version in known.items():
            if version != start[stream]:
                await self.set_version(conn, stream, version)
        return duplicates

    @staticmethod
    async def set_version(conn: Connection, stream: str, version: int) -> None:
        await conn.execute(
            "INSERT INTO kafka_stream_versions (consumer, stream_id, version) VALUES ($1, $2, $3)"
            " ON CONFLICT (consumer, stream_id) DO UPDATE SET version = excluded.version"
            " WHERE kafka_stream_versions.version < excluded.version",
            CONSUMER,
            stream,
            version,
        )

    async def write_checkpoints(
        self, conn: Connection, partition: int, offset: int, last: datetime | None
    ) -> None:
        now = datetime.now(UTC)
        for name in self.names:
            await conn.execute(
                'INSERT INTO kafka_checkpoints (projection, topic, partition, "offset",'
                " last_recorded_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)"
                ' ON CONFLICT (projection, topic, partition) DO UPDATE SET "offset" ='
                ' excluded."offset", last_recorded_at = coalesce(excluded.last_recorded_at,'
                " kafka_checkpoints.last_recorded_at), updated_at = excluded.updated_at",
                name,
                self.topic,
                partition,
                offset,
                last,
                now,
            )

    async def checkpoints(self) -> dict[int, int]:
        """The lowest checkpointed offset of each partition over the projections."""
        rows = await self._db.fetch(
            'SELECT partition, min("offset") AS offset FROM kafka_checkpoints'
            " WHERE topic = $1 GROUP BY partition",
            self.topic,
        )
        return {int(r["partition"]): int(r["offset"]) for r in rows}

    # ---- dead letters ---------------------------------------------------------------------

    async def apply_letter(self, conn: Connection, letter: dead_letters.DeadLetter) -> None:
        """Apply a dead letter's event now (a retry after a fix)."""
        await self.apply_events(conn, [decode_event(letter.value)])

    async def skip_letter(self, conn: Connection, letter: dead_letters.DeadLetter) -> None:
        """A discarded event counts as applied, so later versions of its stream go on."""
        try:
            event = decode_event(letter.value)
        except ValueError:
            return  # not an event: nothing to skip
        await self.set_version(conn, event.stream_id, event.version)

    def dead_letters(self) -> dead_letters.DeadLetters:
        return dead_letters.DeadLetters(self._db, self.apply_letter, self.skip_letter)


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
        self.on_outcome: Callable[[str, str, int], None] | None = None
        self.on_dead_letter: Callable[[str, str, int], None] | None = None
        self.on_lag: Callable[[str, int, int], None] | None = None
        self.on_assigned: Callable[[int], None] | None = None
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

        Kafka answers such a fetch with OFFSET_OUT_OF_RANGE (and `auto_offset_reset` applies),
        but a broker that lost its log (a wiped cluster; Tansu after a restart) may simply
        wait until the new log grows past the old position, skipping what comes before.
        """
        assigned = list(consumer.assignment())
        if not assigned:
            return
        try:
            async with asyncio.timeout(2.0):
                ends = await consumer.end_offsets(assigned)
            for tp in assigned:
                if await consumer.position(tp) > ends[tp]:
                    log.warning("kafka projections: the log of %s was reset; from start", tp)
                    await consumer.seek_to_beginning(tp)
        except (TimeoutError, KafkaError) as exc:
            log.debug("kafka projections: cannot check the log ends (%s)", exc)

    async def _partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Any
    ) -> None:
        messages = [_message(r) for r in records]
        if not messages:
            return
        delay = self._backoff
        while True:
            try:
                outcomes = await self._apply(messages)
                break
            except TRANSIENT as exc:  # the database is away: not the messages' fault
                log.warning("kafka projections: %s; retrying in %.1f s", exc, delay)
            except Exception:
                # Unexpected (e.g. the dead letter could not be written): never skip the
                # batch; it is applied again (duplicates are dropped by version).
                log.exception("kafka projections: %s failed; retrying in %.1f s", tp, delay)
            self._outcome(tp.topic, "retry", len(messages))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
        for outcome, count in outcomes.items():
            self._outcome(tp.topic, outcome, count)
        self.handled += len(messages)
        with contextlib.suppress(KafkaError, AssertionError):
            # Only a hint for tools: the checkpoint in the database is what counts.
            await consumer.commit({tp: messages[-1].offset + 1})
        end = consumer.highwater(tp)  # from the fetch just answered: no request
        if self.on_lag is not None and end is not None:
            self.on_lag(tp.topic, tp.partition, max(0, end - messages[-1].offset - 1))

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
        """Lag per projection: events not yet published plus messages not yet applied.

        `ends` (partition -> end offset) defaults to what this process's consumer sees; a
        process that does not consume passes `end_offsets(...)`."""
        rows = await self.applier.db.fetch(
            'SELECT projection, partition, "offset", updated_at FROM kafka_checkpoints'
            " WHERE topic = $1",
            self.applier.topic,
        )
        if ends is None:
            ends = await self._end_offsets()
        stats = await store.outbox_stats()
        head = await store.head_position()
        now = datetime.now(UTC)
        backlog_age = (
            max(0.0, (now - stats.oldest_created_at).total_seconds())
            if stats.oldest_created_at is not None
            else 0.0
        )
        result = []
        for name in self.applier.names:
            mine = {int(r["partition"]): r for r in rows if r["projection"] == name}
            lag = stats.backlog
            lag_seconds = backlog_age
            updated = [r["updated_at"] for r in mine.values()]
            for partition, end in ends.items():
                row = mine.get(partition)
                behind = end - (int(row["offset"]) + 1 if row is not None else 0)
                if behind > 0:
                    lag += behind
                    if row is not None:
                        since = (now - row["updated_at"]).total_seconds()
                        lag_seconds = max(lag_seconds, since)
            result.append(
                ProjectionStatus(
                    name=name,
                    position=head - lag if lag <= head else 0,
                    head=head,
                    lag_events=lag,
                    lag_seconds=lag_seconds,
                    updated_at=max(updated) if updated else None,
                )
            )
        return result

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
