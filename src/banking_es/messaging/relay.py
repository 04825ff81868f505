"""The outbox relay: hands outbox rows to a publisher in id order, then marks them sent.

Without Kafka the publisher only logs notifications; with it, it publishes to the broker
(`kafka.KafkaPublisher`). A row is marked only after the publisher returned; a failed batch
stays pending and is published again, whole and in order. With a `leader` only the process
holding the lease publishes, so two relays never publish one account's events out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from banking_es.application.ports import Clock
from banking_es.db.lease import LeaseElection
from banking_es.eventstore.base import EVENTS_TOPIC, EventStore, OutboxEntry
from banking_es.tasks import cancel

#: The lease that picks the one process relaying the outbox (Kafka or log publisher).
RELAY_LEASE = "outbox-relay"

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, entries: Sequence[OutboxEntry]) -> None: ...


class LogPublisher:
    """Publisher without Kafka: events go nowhere else; notifications go to the log.

    Its payload is logged only in development (`with_payloads`); otherwise only that one
    was sent (a payload may hold personal data, such as a user id).
    """

    def __init__(self, *, with_payloads: bool = True) -> None:
        self.with_payloads = with_payloads

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        for entry in entries:
            if entry.topic == EVENTS_TOPIC:
                continue
            if self.with_payloads:
                log.info("notification on %s for %s: %s", entry.topic, entry.key, entry.payload)
            else:
                log.info("notification on %s for %s (payload not logged)", entry.topic, entry.key)


class OutboxRelay:
    """Polls the outbox and publishes pending rows; survives database errors."""

    def __init__(
        self,
        store: EventStore,
        publisher: Publisher,
        clock: Clock,
        *,
        poll_interval: float = 0.2,
        batch_size: int = 500,
        leader: LeaseElection | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._poll = poll_interval
        self._batch = batch_size
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._leader = leader

    @property
    def leader(self) -> LeaseElection | None:
        return self._leader

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    def notify(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        if self._leader is not None and not await self._leader.ensure():
            return 0  # another relay leads; stand by
        entries = await self._store.outbox_pending(self._batch)
        if entries:
            await self._publisher.publish(entries)
            await self._store.mark_published([e.id for e in entries], self._clock.now())
        return len(entries)

    async def _loop(self) -> None:
        while True:
            try:
                while await self.run_once() >= self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep relaying after the database comes back
                log.warning("outbox relay failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="outbox-relay")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._leader is not None:
            await self._leader.release()
