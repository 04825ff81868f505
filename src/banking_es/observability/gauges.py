"""Gauges derived from the database, refreshed when /metrics is scraped.

Projection lag and the outbox backlog describe the whole system, not one process: the
scraped worker reads them (bounded by a timeout, so a hanging database never hangs
the scrape) and the multiprocess mode `livemostrecent` shows the latest reading.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from banking_es.application.ports import Clock, ProjectionStatus
from banking_es.eventstore.base import OutboxStats
from banking_es.observability.health import bounded
from banking_es.observability.metrics import Metrics

log = logging.getLogger(__name__)

REFRESH_TIMEOUT = 0.5


class _Projections(Protocol):
    async def status(self) -> list[ProjectionStatus]: ...


class _Store(Protocol):
    @property
    def queue_length(self) -> int: ...

    async def outbox_stats(self) -> OutboxStats: ...


async def refresh_gauges(
    metrics: Metrics,
    store: _Store,
    projections: _Projections,
    clock: Clock,
    *,
    timeout: float = REFRESH_TIMEOUT,
) -> None:
    """Read projection status and outbox stats into the gauges; keep old values on failure."""
    metrics.append_queue.set(store.queue_length)

    async def projection_gauges() -> None:
        rows = await projections.status()
        for row in rows:
            metrics.projection_position.labels(row.name).set(row.position)
            metrics.projection_lag_events.labels(row.name).set(row.lag_events)
            metrics.projection_lag_seconds.labels(row.name).set(row.lag_seconds)
            metrics.head_position.set(row.head)

    async def outbox_gauges() -> None:
        stats = await store.outbox_stats()
        age = 0.0
        if stats.oldest_created_at is not None:
            age = max(0.0, (clock.now() - stats.oldest_created_at).total_seconds())
        metrics.outbox_backlog.set(stats.backlog)
        metrics.outbox_oldest_age.set(age)

    results = await asyncio.gather(
        bounded(projection_gauges(), timeout),
        bounded(outbox_gauges(), timeout),
        return_exceptions=True,
    )
    for source, result in zip(("projections", "outbox"), results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            metrics.gauge_refresh_errors.labels(source).inc()
            log.warning(
                "metrics: could not refresh %s gauges: %s",
                source,
                str(result) or type(result).__name__,
                extra={"reason": type(result).__name__},
            )
