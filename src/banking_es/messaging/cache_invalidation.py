"""Cache invalidation from Kafka: every server process drops its cached copy of an account
when an event of that account arrives on `<prefix>.events`.

Unlike the projections, every process must see every partition, so this consumer has no
group (aiokafka then assigns it all partitions) and starts at the end of the log. Reads
stay correct without it (the L1 cache fast-forwards from the store); it keeps other
processes' entries from going stale in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from banking_es.messaging.kafka import KafkaConfig
from banking_es.tasks import cancel

log = logging.getLogger(__name__)


class Invalidates(Protocol):
    def invalidate(self, account_id: str) -> None: ...


class CacheInvalidator:
    """Consumes `<prefix>.events` without a group and invalidates each message's key."""

    def __init__(self, cache: Invalidates, config: KafkaConfig, *, retry: float = 1.0) -> None:
        self._cache = cache
        self._config = config
        self._retry = retry
        self._task: asyncio.Task[None] | None = None
        self.invalidated = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kafka-cache-invalidation")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                self._config.topics.events,
                bootstrap_servers=self._config.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                request_timeout_ms=self._config.request_timeout_ms,
            )
            try:
                await consumer.start()
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                    for records in batches.values():
                        for record in records:
                            if record.key:
                                self._cache.invalidate(record.key.decode(errors="replace"))
                                self.invalidated += 1
            except (KafkaError, OSError) as exc:
                log.warning("cache invalidation: Kafka failed (%s); retrying", exc)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(self._retry)
