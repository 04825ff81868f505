"""The composition root: every adapter and service is built here, from one `Settings`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from banking_es.api.ratelimit import RateLimiter, build_rate_limiter
from banking_es.application.accounts import AccountService
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.ports import Clock, SystemClock, UuidGenerator
from banking_es.application.validation import RequestValidator, default_validator
from banking_es.cache.dedup import RedisCommandDedup
from banking_es.cache.health import cache_checks
from banking_es.cache.local import LocalAccountCache
from banking_es.cache.metrics import CacheMetrics
from banking_es.cache.pages import EventPageCache
from banking_es.cache.redis import RedisGateway
from banking_es.cache.two_level import TwoLevelAccountCache
from banking_es.cache.warming import CacheWarmer
from banking_es.config import Environment, Settings
from banking_es.db.base import Database
from banking_es.db.migrate import migrate
from banking_es.eventstore.sql import SqlEventStore
from banking_es.eventstore.stream_notices import StreamNotices
from banking_es.identity.access import AccountAccess
from banking_es.identity.factory import build_identity
from banking_es.identity.service import IdentityService
from banking_es.mail.sender import MailSender
from banking_es.mail.setup import build_sender, check_mail_settings
from banking_es.messaging.leader import LeaseElection
from banking_es.messaging.relay import RELAY_LEASE, LogPublisher, OutboxRelay
from banking_es.observability.events import record_login
from banking_es.observability.health import HealthChecks, core_checks
from banking_es.observability.metrics import Metrics
from banking_es.projections import default_projections
from banking_es.projections.checkpoints import ProjectionStatus
from banking_es.projections.queries import ReadModels
from banking_es.projections.runner import PROJECTIONS_LEASE, ProjectionRunner
from banking_es.tasks import cancel

if TYPE_CHECKING:
    from banking_es.messaging.wiring import KafkaMessaging

log = logging.getLogger(__name__)

#: Seconds between two exports of a worker's cache counts to the metrics (under a scrape).
METRICS_EXPORT_INTERVAL = 5.0


async def connect_database(settings: Settings, *, pool_size: int = 20) -> Database:
    if settings.backend == "postgres":
        from banking_es.db.postgres import PostgresDatabase

        return await PostgresDatabase.connect(settings.database_url, max_size=pool_size)
    from banking_es.db.sqlite import SqliteDatabase

    return await SqliteDatabase.connect(settings.sqlite_path)


def build_store(
    settings: Settings, db: Database, on_batch: Callable[[int, float], None] | None = None
) -> SqlEventStore:
    # Events go to the outbox only for Kafka (the relay publishes them there); without it
    # nothing reads them: projections follow the store itself. Notifications always do.
    outbox_events = bool(settings.kafka_bootstrap_servers)
    if db.dialect == "postgres":
        from banking_es.eventstore.postgres import PostgresEventStore

        return PostgresEventStore(
            db,
            processes=settings.workers,
            batch_max_size=settings.batch_max_size,
            batch_max_wait_ms=settings.batch_max_wait_ms,
            on_batch=on_batch,
            outbox_events=outbox_events,
        )
    from banking_es.eventstore.sqlite import SqliteEventStore

    return SqliteEventStore(
        db,
        batch_max_size=settings.batch_max_size,
        batch_max_wait_ms=settings.batch_max_wait_ms,
        on_batch=on_batch,
        outbox_events=outbox_events,
    )


def build_redis(settings: Settings, metrics: CacheMetrics) -> RedisGateway | None:
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
    identity: IdentityService
    access: AccountAccess
    #: Set when KAFKA_BOOTSTRAP_SERVERS is: the relay publishes to Kafka and a consumer group
    #: drives the projections instead of `projections` following the store.
    kafka: KafkaMessaging | None = None
    _maintenance: asyncio.Task[None] | None = field(default=None, repr=False)
    metrics: Metrics = field(default_factory=Metrics)
    health: HealthChecks = field(default_factory=HealthChecks)
    # Redis issue: the shared cache, its metrics and warming (redis is None without REDIS_URL).
    account_cache: TwoLevelAccountCache | None = None
    cache_metrics: CacheMetrics = field(default_factory=CacheMetrics)
    cache_warmer: CacheWarmer | None = None
    redis: RedisGateway | None = None
    rate_limiter: RateLimiter | None = None
    validator: RequestValidator = field(default_factory=default_validator)
    _warming: asyncio.Task[None] | None = field(default=None, repr=False)
    _exporting: asyncio.Task[None] | None = field(default=None, repr=False)
    #: PostgreSQL: other processes' appends, so cached accounts are read forward in time.
    stream_notices: StreamNotices | None = None
    #: Sends the mail queue (None when mail is off); apart from the relay, so a failing
    #: mail server never holds up event publishing.
    mail: MailSender | None = None

    async def start(self) -> None:
        await self.identity.revocations.start()
        if self.stream_notices is not None:
            await self.stream_notices.start()
        if self.kafka is not None:
            self.kafka.start()
        else:
            await self.projections.start()
            self.relay.start()
        if self.account_cache is not None:
            self.account_cache.start()
        if self.cache_warmer is not None:
            self._warming = asyncio.create_task(self.cache_warmer.run(), name="cache-warming")
        if self.mail is not None:
            self.mail.start()
        self._maintenance = asyncio.create_task(self._purge_expired_keys(), name="maintenance")
        self._exporting = asyncio.create_task(self._export_metrics_every(), name="metrics-export")

    def export_metrics(self) -> None:
        """Hand this process's cache counts and L1 size to Prometheus (see `export_cache`)."""
        self.metrics.export_cache(
            self.cache_metrics, len(self.cache), self.cache.approximate_bytes()
        )

    async def _export_metrics_every(self) -> None:
        # Every worker, not only the scraped one, must bring its counts to the shared files.
        while True:
            await asyncio.sleep(METRICS_EXPORT_INTERVAL)
            self.export_metrics()

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
        for task in (self._maintenance, self._warming, self._exporting):
            await cancel(task)
        await self.accounts.drain()
        if self.mail is not None:
            await self.mail.stop()
        if self.kafka is not None:
            await self.kafka.close()
        if self.account_cache is not None:
            await self.account_cache.close()
        if self.redis is not None:
            await self.redis.close()
        await self.relay.stop()
        await self.projections.stop()
        await self.identity.revocations.stop()
        if self.stream_notices is not None:
            await self.stream_notices.stop()
        await self.store.close()
        await self.db.close()
        self.export_metrics()
        self.metrics.close()


def _stream_notices(
    store: SqlEventStore, db: Database, accounts: AccountService
) -> StreamNotices | None:
    """PostgreSQL only: the notices of other processes' appends, for the account cache."""
    origin = getattr(store, "origin", None)
    url = getattr(db, "url", None)
    if origin is None or url is None:
        return None
    return StreamNotices(url, origin, accounts.note_appended_elsewhere)


def _count_kafka(kafka: KafkaMessaging, metrics: Metrics) -> None:
    """Kafka publish/consume counts and dead letters into the Prometheus metrics."""
    from banking_es.messaging.kafka import KafkaPublisher

    publisher = kafka.relay.publisher
    if isinstance(publisher, KafkaPublisher):
        publisher.on_published = lambda topic, n: metrics.kafka_published.labels(topic).inc(n)
        publisher.on_error = lambda topic: metrics.kafka_publish_errors.labels(topic).inc()
    consumer = kafka.projections
    group = consumer.group_id
    consumer.on_outcome = lambda topic, outcome, n: metrics.kafka_consumed.labels(
        topic, group, outcome
    ).inc(n)
    consumer.on_dead_letter = lambda topic, error, attempts: metrics.dead_letters.labels(
        topic
    ).inc()
    consumer.on_lag = lambda topic, partition, lag: metrics.kafka_consumer_lag.labels(
        topic, group, str(partition)
    ).set(lag)
    consumer.on_assigned = lambda count: metrics.leader.labels("projections").set(min(count, 1))


def _count_leaders(metrics: Metrics, *elections: tuple[str, LeaseElection | None]) -> None:
    """`banking_es_leader{role}`: 1 while this process holds the role's lease."""
    for role, election in elections:
        gauge = metrics.leader.labels(role)
        gauge.set(0)  # exported from the start, so "no leader" shows as a sum of 0
        if election is not None:
            election.on_change = lambda held, gauge=gauge: gauge.set(1 if held else 0)


@dataclass(frozen=True)
class _KafkaProjections:
    """Projection status when a Kafka consumer group drives the projections."""

    kafka: KafkaMessaging
    store: SqlEventStore

    async def status(self) -> list[ProjectionStatus]:
        return await self.kafka.projection_status(self.store)


async def build_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    check_mail_settings(settings)
    db = await connect_database(settings)
    try:
        if run_migrations:
            applied = await migrate(db)
            for migration in applied:
                log.info("applied migration %04d_%s", migration.version, migration.name)
        clock = SystemClock()
        metrics = Metrics()
        store = build_store(
            settings,
            db,
            on_batch=lambda size, took: metrics.observe_batch(size, took, store.queue_length),
        )
        store.on_append = metrics.observe_append
        store.on_snapshot_load = metrics.observe_snapshot_load
        cache_metrics = CacheMetrics()
        cache = LocalAccountCache(
            settings.cache_l1_size, settings.cache_ttl, settings.cache_eviction, cache_metrics
        )
        redis = build_redis(settings, cache_metrics)
        account_cache = TwoLevelAccountCache(cache, redis, ttl=settings.cache_ttl)
        accounts = AccountService(
            store,
            account_cache,
            clock=clock,
            ids=UuidGenerator(),
            snapshot_threshold=settings.snapshot_threshold,
            retry_budget=settings.command_retry_budget_s,
            pages=EventPageCache(redis, ttl=settings.cache_ttl, metrics=cache_metrics),
        )
        accounts.on_command = metrics.observe_command
        projections = ProjectionRunner(
            db,
            store,
            default_projections(),
            poll_interval=settings.projection_poll_interval_ms / 1000,
            leader=LeaseElection(db, PROJECTIONS_LEASE, clock),
        )
        development = settings.banking_env is not Environment.PRODUCTION
        # One relay at a time (the lease), as with Kafka: otherwise every worker would read,
        # log and mark the same outbox rows.
        relay = OutboxRelay(
            store,
            LogPublisher(with_payloads=development),
            clock,
            leader=LeaseElection(db, RELAY_LEASE, clock, ttl=settings.kafka_relay_lease_ttl),
        )
        kafka = None
        if settings.kafka_bootstrap_servers:
            from banking_es.messaging.wiring import build_kafka

            kafka = build_kafka(settings, db, store, default_projections(), account_cache, clock)
            relay = kafka.relay
            _count_kafka(kafka, metrics)
        _count_leaders(
            metrics,
            ("projections", projections.leader if kafka is None else None),
            ("relay", relay.leader),
        )

        def wake_followers(outbox: bool) -> None:
            projections.notify()
            if outbox:
                relay.notify()

        store.on_commit = wake_followers
        health = core_checks(
            store,
            projections if kafka is None else _KafkaProjections(kafka, store),
            clock,
            dialect=db.dialect,
            projection_lag_degraded=settings.projection_lag_degraded,
            outbox_age_degraded=settings.outbox_age_degraded,
        )
        identity = build_identity(settings, db, clock)
        identity.on_login = lambda outcome, user_id: record_login(metrics, outcome, user_id=user_id)
        mail = None
        if identity.mail is not None:
            mail = build_sender(settings, db, identity.mail, clock, identity.issue_reset_token)
        services = Services(
            settings=settings,
            db=db,
            store=store,
            cache=cache,
            accounts=accounts,
            idempotency=IdempotencyService(
                store, clock, settings.idempotency_ttl_hours, build_dedup(settings, redis)
            ),
            read_models=ReadModels(db),
            projections=projections,
            relay=relay,
            clock=clock,
            metrics=metrics,
            health=health,
            account_cache=account_cache,
            cache_metrics=cache_metrics,
            cache_warmer=CacheWarmer(
                db,
                accounts.get_account,
                min(settings.cache_warm_accounts, settings.cache_l1_size),
                cache_metrics,
            ),
            redis=redis,
            rate_limiter=build_rate_limiter(settings, redis, metrics.observe_rate_limited),
            validator=default_validator(
                on_failure=metrics.observe_validation,
                on_warning=lambda rule: metrics.observe_validation(rule, warning=True),
            ),
            identity=identity,
            access=AccountAccess(accounts),
            kafka=kafka,
            stream_notices=_stream_notices(store, db, accounts),
            mail=mail,
        )
        if kafka is not None:
            services.health.add("kafka", kafka.health, critical=False)
        for name, check in zip(*cache_checks(services), strict=True):
            services.health.add(name, check, critical=False)
        return services
    except BaseException:
        await db.close()
        raise
