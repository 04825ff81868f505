"""The composition root: every adapter and service is built here, from one `Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from banking_es.application.accounts import AccountService
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.ports import Clock, SystemClock, UuidGenerator
from banking_es.cache.local import LocalAccountCache
from banking_es.config import Settings
from banking_es.db.base import Database
from banking_es.db.migrate import migrate
from banking_es.eventstore.sql import SqlEventStore
from banking_es.messaging.relay import LogPublisher, OutboxRelay
from banking_es.projections import default_projections
from banking_es.projections.queries import ReadModels
from banking_es.projections.runner import ProjectionRunner

if TYPE_CHECKING:
    from banking_es.messaging.wiring import KafkaMessaging

log = logging.getLogger(__name__)


async def connect_database(settings: Settings, *, pool_size: int = 20) -> Database:
    if settings.backend == "postgres":
        from banking_es.db.postgres import PostgresDatabase

        return await PostgresDatabase.connect(settings.database_url, max_size=pool_size)
    if settings.backend == "sqlite":
        from banking_es.db.sqlite import SqliteDatabase

        return await SqliteDatabase.connect(settings.sqlite_path)
    raise ValueError("memory:// has no SQL database; use sqlite:// or postgresql://")


def build_store(settings: Settings, db: Database) -> SqlEventStore:
    if db.dialect == "postgres":
        from banking_es.eventstore.postgres import PostgresEventStore

        return PostgresEventStore(
            db,
            batch_max_size=settings.batch_max_size,
            batch_max_wait_ms=settings.batch_max_wait_ms,
        )
    from banking_es.eventstore.sqlite import SqliteEventStore

    return SqliteEventStore(
        db, batch_max_size=settings.batch_max_size, batch_max_wait_ms=settings.batch_max_wait_ms
    )


@dataclass
class Services:
    """Everything a request handler or background task needs, built once per process."""

    settings: Settings
    db: Database
    store: SqlEventStore
    cache: LocalAccountCache
    accounts: AccountService
    idempotency: IdempotencyService
    read_models: ReadModels
    projections: ProjectionRunner
    relay: OutboxRelay
    clock: Clock
    #: Set when KAFKA_BOOTSTRAP_SERVERS is: the relay publishes to Kafka and a consumer group
    #: drives the projections instead of `projections` following the store.
    kafka: KafkaMessaging | None = None
    _maintenance: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        if self.kafka is not None:
            self.kafka.start()
        else:
            await self.projections.start()
            self.relay.start()
        self._maintenance = asyncio.create_task(self._purge_expired_keys(), name="maintenance")

    async def _purge_expired_keys(self, every: float = 600.0) -> None:
        while True:
            try:
                purged = await self.idempotency.purge()
                if purged:
                    log.info("purged %d expired idempotency keys", purged)
            except Exception as exc:  # the database may be away; try again next round
                log.warning("purging idempotency keys failed: %s", exc)
            await asyncio.sleep(every)

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.accounts.drain()
        if self.kafka is not None:
            await self.kafka.close()
        await self.relay.stop()
        await self.projections.stop()
        await self.store.close()
        await self.db.close()


async def build_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    db = await connect_database(settings)
    try:
        if run_migrations:
            applied = await migrate(db)
            for migration in applied:
                log.info("applied migration %04d_%s", migration.version, migration.name)
        clock = SystemClock()
        store = build_store(settings, db)
        cache = LocalAccountCache(
            settings.cache_l1_size, settings.cache_ttl, settings.cache_eviction
        )
        accounts = AccountService(
            store,
            cache,
            clock=clock,
            ids=UuidGenerator(),
            snapshot_threshold=settings.snapshot_threshold,
            retry_budget=settings.command_retry_budget_s,
        )
        projections = ProjectionRunner(
            db,
            store,
            default_projections(),
            poll_interval=settings.projection_poll_interval_ms / 1000,
        )
        relay = OutboxRelay(store, LogPublisher(), clock)
        kafka = None
        if settings.kafka_bootstrap_servers:
            from banking_es.messaging.wiring import build_kafka

            kafka = build_kafka(settings, db, store, default_projections(), cache, clock)
            relay = kafka.relay

        def wake_followers() -> None:
            projections.notify()
            relay.notify()

        store.on_commit = wake_followers
        return Services(
            settings=settings,
            db=db,
            store=store,
            cache=cache,
            accounts=accounts,
            idempotency=IdempotencyService(store, clock, settings.idempotency_ttl_hours),
            read_models=ReadModels(db),
            projections=projections,
            relay=relay,
            clock=clock,
            kafka=kafka,
        )
    except BaseException:
        await db.close()
        raise
