"""The composition root: every adapter and service of a process is built here from one
`Settings` (`build_services`), with `Overrides` for what a test or a tool supplies itself.
The CLI builds its parts from the same builders (`bootstrap.adapters`, `.kafka`, `.identity`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from banking_es.application.accounts import AccountService
from banking_es.application.admin import AdminService
from banking_es.application.hold_expiry import HoldExpiry
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.ports import Clock, IdGenerator, SystemClock, UuidGenerator
from banking_es.application.validation import RequestValidator, default_validator
from banking_es.bootstrap.adapters import (
    build_dedup,
    build_projection_runner,
    build_redis,
    build_store,
    build_stream_notices,
    connect_database,
)
from banking_es.bootstrap.admin import build_admin
from banking_es.bootstrap.identity import build_identity
from banking_es.bootstrap.kafka import KafkaMessaging, build_applier, build_kafka
from banking_es.bootstrap.shards import Sharding, build_hold_expiry, build_sharding
from banking_es.cache.health import cache_checks
from banking_es.cache.local import LocalAccountCache
from banking_es.cache.pages import EventPageCache
from banking_es.cache.redis import RedisGateway
from banking_es.cache.two_level import TwoLevelAccountCache
from banking_es.cache.warming import CacheWarmer
from banking_es.config import Environment, Settings
from banking_es.db.base import Database
from banking_es.db.lease import LeaseElection
from banking_es.db.migrate import migrate
from banking_es.eventstore.base import EventStore
from banking_es.eventstore.stream_notices import StreamNotices
from banking_es.identity.access import AccountAccess
from banking_es.identity.service import IdentityService
from banking_es.mail.sender import MailSender
from banking_es.mail.setup import build_sender, check_mail_settings
from banking_es.messaging.dead_letters import DeadLetters
from banking_es.messaging.relay import RELAY_LEASE, LogPublisher, OutboxRelay
from banking_es.observability.cache_and_redis import CacheAndRedisCounters
from banking_es.observability.events import record_login
from banking_es.observability.health import HealthChecks, core_checks
from banking_es.observability.metrics import Metrics
from banking_es.projections.queries import ReadModels
from banking_es.projections.runner import PROJECTIONS_LEASE, ProjectionRunner
from banking_es.ratelimit.limiter import RateLimiter
from banking_es.shards.report import shard_report, single_instance_report
from banking_es.tasks import cancel

log = logging.getLogger(__name__)

#: Seconds between two exports of a worker's cache counts to the metrics (under a scrape).
METRICS_EXPORT_INTERVAL = 5.0


@dataclass(frozen=True)
class Overrides:
    """What `build_services` takes as given instead of building it from `Settings`."""

    #: The clock of every service, and the generator of account and event ids.
    clock: Clock | None = None
    ids: IdGenerator | None = None
    #: The identity service's clock alone (token expiry, lock-outs, reset tokens).
    identity_clock: Clock | None = None
    #: Every event also to the outbox, as with KAFKA_BOOTSTRAP_SERVERS (default: only then).
    outbox_events: bool | None = None
    #: The rate limiter's clock (seconds, as `time.time`).
    rate_limit_clock: Callable[[], float] | None = None
    #: Told of every command's outcome instead of the metrics.
    on_command: Callable[[str, str], None] | None = None
    #: Told of every mail the mail server accepted.
    on_mail_sent: Callable[[EmailMessage], None] | None = None


@dataclass
class Services:
    """Everything a request handler or background task needs, built once per process."""

    settings: Settings
    db: Database
    store: EventStore
    #: The account cache: this process's L1 (`cache.local`), Redis (L2) behind it when set.
    cache: TwoLevelAccountCache
    accounts: AccountService
    idempotency: IdempotencyService
    read_models: ReadModels
    projections: ProjectionRunner
    relay: OutboxRelay
    clock: Clock
    identity: IdentityService
    access: AccountAccess
    admin: AdminService
    #: Set when KAFKA_BOOTSTRAP_SERVERS is: the relay publishes to Kafka and a consumer group
    #: drives the projections instead of `projections` following the store.
    kafka: KafkaMessaging | None = None
    _maintenance: asyncio.Task[None] | None = field(default=None, repr=False)
    metrics: Metrics = field(default_factory=Metrics)
    health: HealthChecks = field(default_factory=HealthChecks)
    # Counts of the caches and of Redis, the warmer (redis is None without REDIS_URL).
    cache_and_redis: CacheAndRedisCounters = field(default_factory=CacheAndRedisCounters)
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
    #: Records each due hold expired (one process at a time, under its lease).
    hold_expiry: HoldExpiry | None = None
    _expiring: asyncio.Task[None] | None = field(default=None, repr=False)
    #: Set when INSTANCE_URL is (several instances): this instance's shards and locks.
    sharding: Sharding | None = None

    async def start(self) -> None:
        await self.identity.revocations.start()
        if self.stream_notices is not None:
            await self.stream_notices.start()
        if self.kafka is not None:
            self.kafka.start()
        else:
            await self.projections.start()
            self.relay.start()
        self.cache.start()
        if self.cache_warmer is not None and self.sharding is None:  # else: as it takes shards
            self._warming = asyncio.create_task(self.cache_warmer.run(), name="cache-warming")
        if self.mail is not None:
            self.mail.start()
        self._maintenance = asyncio.create_task(self._purge_expired_keys(), name="maintenance")
        if self.hold_expiry is not None:
            self._expiring = asyncio.create_task(self.hold_expiry.run(), name="hold-expiry")
        self._exporting = asyncio.create_task(self._export_metrics_every(), name="metrics-export")
        if self.sharding is not None:  # last: it serves once it holds its share
            await self.sharding.manager.start()
        self._export_shards_owned()

    async def shard_report(self) -> dict[str, Any]:
        """`GET /admin/shards`: the shard map, or with one instance every shard its own."""
        if self.sharding is None:
            settings = self.settings
            return single_instance_report(
                settings.effective_instance_id,
                settings.effective_instance_url,
                settings.shard_count,
                self.clock.now(),
            )
        return await shard_report(self.sharding.manager.leases)

    async def rebalance_shards(self) -> list[dict[str, Any]]:
        """A rebalancing round now (`POST /admin/shards/rebalance`): the moves it started."""
        moves = [] if self.sharding is None else await self.sharding.manager.rebalance()
        return [{"shard": m.shard, "from": m.source, "to": m.target} for m in moves]

    def dead_letters(self) -> DeadLetters:
        """The Kafka consumers' dead letters (the admin routes list, retry and discard them)."""
        return build_applier(self.settings, self.db, self.store).dead_letters()

    def export_metrics(self) -> None:
        """Hand this process's request and cache counts, L1 size and shards owned to
        Prometheus."""
        self.metrics.export_requests()
        self.metrics.export_cache(
            self.cache_and_redis, len(self.cache.local), self.cache.local.approximate_bytes()
        )
        self._export_shards_owned()

    def _export_shards_owned(self) -> None:
        owned = self.settings.shard_count
        if self.sharding is not None:
            owned = len(self.sharding.manager.owned)
        self.metrics.shards_owned.set(owned)

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
        if self.sharding is not None:  # first: the others take its shards at once
            await self.sharding.manager.stop()
            await self.sharding.close()
        for task in (self._maintenance, self._warming, self._exporting, self._expiring):
            await cancel(task)
        await self.admin.jobs.stop()  # each records itself failed: the server stopped
        await self.accounts.drain()
        if self.mail is not None:
            await self.mail.stop()
        if self.kafka is not None:
            await self.kafka.close()
        await self.cache.close()
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


async def build_services(
    settings: Settings, *, run_migrations: bool = True, overrides: Overrides | None = None
) -> Services:
    given = overrides or Overrides()
    check_mail_settings(settings)
    db = await connect_database(settings)
    try:
        if run_migrations:
            applied = await migrate(db)
            for migration in applied:
                log.info("applied migration %04d_%s", migration.version, migration.name)
        clock = given.clock or SystemClock()
        metrics = Metrics()
        kafka_on = bool(settings.kafka_bootstrap_servers)

        def wake_followers(outbox: bool) -> None:
            # Told after commits, so only once `projections` and `relay` below exist.
            projections.notify()
            if outbox:
                relay.notify()

        store = build_store(
            settings,
            db,
            outbox_events=given.outbox_events,
            on_batch=lambda size, took: metrics.observe_batch(size, took, store.queue_length),
            on_commit=wake_followers,
            on_append=metrics.observe_append,
            on_snapshot_load=metrics.observe_snapshot_load,
        )
        cache_and_redis = CacheAndRedisCounters()
        local = LocalAccountCache(
            settings.cache_l1_size, settings.cache_ttl, settings.cache_eviction, cache_and_redis
        )
        redis = build_redis(settings, cache_and_redis)
        cache = TwoLevelAccountCache(local, redis, ttl=settings.cache_ttl)
        sharding = build_sharding(settings, db, redis.client if redis else None, metrics)
        if sharding is not None:  # the shard rows, and the count checked (serve did it too)
            await sharding.manager.leases.ensure_shard_count(settings.shard_count)
        accounts = AccountService(
            store,
            cache,
            clock=clock,
            ids=given.ids or UuidGenerator(),
            snapshot_threshold=settings.snapshot_threshold,
            retry_budget=settings.command_retry_budget_s,
            pages=EventPageCache(redis, ttl=settings.cache_ttl, metrics=cache_and_redis),
            on_command=given.on_command or metrics.observe_command,
            fences=sharding.manager if sharding is not None else None,
        )
        # With Kafka a consumer group drives the projections and the relay publishes there;
        # without it one process at a time (the leases) follows the store and logs the outbox.
        kafka = None
        if kafka_on:
            kafka = build_kafka(settings, db, store, cache, clock, metrics)
            projections = build_projection_runner(settings, db, store)
            relay = kafka.relay
        else:
            projections = build_projection_runner(
                settings,
                db,
                store,
                LeaseElection(
                    db, PROJECTIONS_LEASE, clock, on_change=metrics.leader_role("projections")
                ),
            )
            development = settings.banking_env is not Environment.PRODUCTION
            relay = OutboxRelay(
                store,
                LogPublisher(with_payloads=development),
                clock,
                leader=LeaseElection(
                    db,
                    RELAY_LEASE,
                    clock,
                    ttl=settings.kafka_relay_lease_ttl,
                    on_change=metrics.leader_role("relay"),
                ),
            )
        statuses = projections if kafka is None else kafka
        health = core_checks(
            store,
            statuses,
            clock,
            dialect=db.dialect,
            projection_lag_degraded=settings.projection_lag_degraded,
            outbox_age_degraded=settings.outbox_age_degraded,
        )
        identity = build_identity(
            settings,
            db,
            given.identity_clock or clock,
            on_login=lambda outcome, user_id: record_login(metrics, outcome, user_id=user_id),
        )
        mail = None
        if identity.mail is not None:
            mail = build_sender(
                settings,
                db,
                identity.mail,
                clock,
                identity.issue_reset_token,
                on_sent=given.on_mail_sent,
            )
        warmer = CacheWarmer(
            db,
            accounts.get_account,
            min(settings.cache_warm_accounts, settings.cache_l1_size),
            cache_and_redis,
        )
        if kafka is not None:
            health.add("kafka", kafka.health, critical=False)
        if sharding is not None:
            sharding.serve(accounts, warmer)
            health.add("shards", sharding.manager.health, critical=False)
            health.add("locks", sharding.locks_health, critical=False)
        for name, check in cache_checks(cache, warmer, redis).items():
            health.add(name, check, critical=False)
        return Services(
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
            cache_and_redis=cache_and_redis,
            cache_warmer=warmer,
            redis=redis,
            rate_limiter=(
                RateLimiter(
                    settings,
                    redis,
                    metrics.observe_rate_limited,
                    clock=given.rate_limit_clock or time.time,
                )
                if settings.rate_limit_enabled
                else None
            ),
            validator=default_validator(
                on_failure=metrics.observe_validation,
                on_warning=lambda rule: metrics.observe_validation(rule, warning=True),
            ),
            identity=identity,
            access=AccountAccess(accounts),
            admin=build_admin(settings, db, store, clock, statuses, projections, cache),
            kafka=kafka,
            stream_notices=build_stream_notices(store, db, accounts.note_appended_elsewhere),
            mail=mail,
            hold_expiry=build_hold_expiry(db, store, accounts, clock, sharding),
            sharding=sharding,
        )
    except BaseException:
        await db.close()
        raise
