"""Builds the admin API's service (application/admin.py) from the adapters."""

from __future__ import annotations

from functools import partial

from banking_es.application.admin import AdminService, ProjectionStatuses, Rebuilder
from banking_es.application.jobs import Jobs
from banking_es.application.ports import Clock
from banking_es.cache.stats import cache_stats
from banking_es.cache.two_level import TwoLevelAccountCache
from banking_es.config import Settings
from banking_es.db.base import Database
from banking_es.db.jobs import SqlJobStore
from banking_es.db.lease import lease_holders
from banking_es.eventstore.base import EventStore
from banking_es.messaging.relay import RELAY_LEASE
from banking_es.projections.runner import PROJECTIONS_LEASE


def build_admin(
    settings: Settings,
    db: Database,
    store: EventStore,
    clock: Clock,
    statuses: ProjectionStatuses,
    rebuilder: Rebuilder,
    cache: TwoLevelAccountCache,
) -> AdminService:
    """`statuses`: the status of whatever drives the projections (with Kafka, a consumer
    group, which holds no lease); `rebuilder`: the store-following runner, the CLI's path."""
    return AdminService(
        projections=statuses,
        rebuilder=rebuilder,
        jobs=Jobs(SqlJobStore(db), clock),
        store=store,
        clock=clock,
        leases=partial(lease_holders, db, clock),
        cache=partial(cache_stats, cache.local, cache.metrics, cache.redis),
        projections_lease=None if settings.kafka_bootstrap_servers else PROJECTIONS_LEASE,
        relay_lease=RELAY_LEASE,
        lag_degraded=settings.projection_lag_degraded,
    )
