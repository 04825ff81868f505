"""The adapters built from `Settings`, for `build_services` and the CLI alike: the database,
the event store, Redis and the command dedup, and the store-following projection runner."""

from __future__ import annotations

import functools
from collections.abc import Callable

from banking_es.cache.dedup import RedisCommandDedup
from banking_es.cache.redis import RedisGateway
from banking_es.config import Settings
from banking_es.db.base import Database
from banking_es.db.lease import LeaseElection
from banking_es.eventstore.base import AppendedElsewhere, AppendRequest, EventStore, RecordedEvent
from banking_es.eventstore.sql import SqlEventStore
from banking_es.eventstore.stream_notices import StreamNotices
from banking_es.observability.cache_and_redis import CacheAndRedisCounters
from banking_es.projections import default_projections
from banking_es.projections.runner import ProjectionRunner


async def connect_database(settings: Settings, *, pool_size: int | None = None) -> Database:
    """The database; a PostgreSQL pool of `pool_size` connections (`DATABASE_POOL_SIZE` unless a
    CLI command needs fewer)."""
    if settings.backend == "postgres":
        from banking_es.db.postgres import PostgresDatabase

        size = pool_size or settings.database_pool_size
        return await PostgresDatabase.connect(
            settings.database_url, min_size=min(2, size), max_size=size
        )
    from banking_es.db.sqlite import SqliteDatabase

    return await SqliteDatabase.connect(settings.sqlite_path)


def build_store(
    settings: Settings,
    db: Database,
    *,
    outbox_events: bool | None = None,
    on_batch: Callable[[int, float], None] | None = None,
    on_commit: Callable[[bool], object] | None = None,
    on_append: Callable[[AppendRequest, list[RecordedEvent]], None] | None = None,
    on_snapshot_load: Callable[[], None] | None = None,
) -> SqlEventStore:
    """The store of `db`'s backend. `outbox_events` (default: whether Kafka is on): whether
    events also go to the outbox; notifications always do."""
    # Without Kafka nothing reads events from the outbox: projections follow the store.
    if outbox_events is None:
        outbox_events = bool(settings.kafka_bootstrap_servers)
    make: Callable[..., SqlEventStore]
    if db.dialect == "postgres":
        from banking_es.eventstore.postgres import PostgresEventStore

        make = functools.partial(PostgresEventStore, processes=settings.workers)
    else:
        from banking_es.eventstore.sqlite import SqliteEventStore

        make = SqliteEventStore
    return make(
        db,
        batch_max_size=settings.batch_max_size,
        batch_max_wait_ms=settings.batch_max_wait_ms,
        outbox_events=outbox_events,
        on_batch=on_batch,
        on_commit=on_commit,
        on_append=on_append,
        on_snapshot_load=on_snapshot_load,
    )


def build_redis(settings: Settings, metrics: CacheAndRedisCounters) -> RedisGateway | None:
    """The Redis gateway when `REDIS_URL` is set (it connects lazily, on first use)."""
    if not settings.redis_url:
        return None
    return RedisGateway(
        settings.redis_url,
        prefix=settings.redis_key_prefix,
        timeout_ms=settings.redis_timeout_ms,
        breaker_failures=settings.redis_breaker_failures,
        breaker_reset=settings.redis_breaker_reset,
        metrics=metrics,
    )


def build_dedup(settings: Settings, redis: RedisGateway | None) -> RedisCommandDedup | None:
    """The Redis fast path in front of the durable Idempotency-Key records."""
    if redis is None:
        return None
    return RedisCommandDedup(
        redis,
        ttl_seconds=settings.idempotency_ttl_hours * 3600,
        pending_ttl=settings.command_retry_budget_s + 5,
    )


def build_projection_runner(
    settings: Settings, db: Database, store: EventStore, leader: LeaseElection | None = None
) -> ProjectionRunner:
    """The runner of the default projections over the store (`leader`: the lease a server
    holds to follow the store; the CLI's rebuilds and status need none)."""
    return ProjectionRunner(
        db,
        store,
        default_projections(),
        poll_interval=settings.projection_poll_interval_ms / 1000,
        leader=leader,
    )


def build_stream_notices(
    store: EventStore, db: Database, on_appended: Callable[[list[AppendedElsewhere]], None]
) -> StreamNotices | None:
    """PostgreSQL only: the notices of other processes' appends, for the account cache."""
    origin = getattr(store, "origin", None)
    url = getattr(db, "url", None)
    if origin is None or url is None:
        return None
    return StreamNotices(url, origin, on_appended)
