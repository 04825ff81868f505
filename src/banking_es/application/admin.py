"""What the admin API reads and starts (API.md, "Operations"): the projections' status and
their rebuilds as jobs, the caches' counts, the outbox. The routes only parse and render.

Built by bootstrap from the adapters: the status source is the store-following runner's or
the Kafka consumer group's, whichever drives the projections.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from banking_es.application.jobs import Jobs, Progress
from banking_es.application.ports import Clock, Job
from banking_es.eventstore.base import EventStore

#: The kind of a projection rebuild's job.
REBUILD = "projection_rebuild"


class ProjectionState(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def lag_events(self) -> int: ...
    @property
    def lag_seconds(self) -> float: ...


class ProjectionStatuses(Protocol):
    async def status(self) -> Sequence[ProjectionState]: ...


class Rebuilder(Protocol):
    """The one rebuild path (`ProjectionRunner.rebuild`, as `banking-es projections rebuild`)."""

    @property
    def names(self) -> list[str]: ...

    async def rebuild(
        self,
        name: str,
        *,
        from_position: int = 0,
        types: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> int: ...


class UnknownProjection(LookupError):
    pass


class RebuildRunning(Exception):
    pass


@dataclass
class AdminService:
    projections: ProjectionStatuses
    rebuilder: Rebuilder
    jobs: Jobs
    store: EventStore
    clock: Clock
    #: The live holder of each lease (`leases` table): lease name -> holder.
    leases: Callable[[], Awaitable[dict[str, str]]]
    #: `{"l1": {...}, "l2": {...} or None, "hit_ratio"}` of this process.
    cache: Callable[[], Awaitable[dict[str, Any]]]
    #: The lease of the projection loops; None when a Kafka consumer group drives them.
    projections_lease: str | None
    relay_lease: str
    #: Lag (seconds) beyond which a projection is `lagging` (PROJECTION_LAG_DEGRADED).
    lag_degraded: float

    async def projection_status(self) -> list[dict[str, Any]]:
        """Each projection's checkpoint, lag, leader and status: `rebuilding` while a
        rebuild job runs, `stalled` when no process holds the projections' lease and events
        wait, `lagging` beyond `lag_degraded`, else `ok`."""
        rows = await self.projections.status()
        rebuilding = {job.subject for job in await self.jobs.running(REBUILD)}
        holders = await self.leases()
        leader = holders.get(self.projections_lease) if self.projections_lease else None
        result = []
        for row in rows:
            if row.name in rebuilding:
                status = "rebuilding"
            elif self.projections_lease and leader is None and row.lag_events > 0:
                status = "stalled"
            elif row.lag_seconds > self.lag_degraded:
                status = "lagging"
            else:
                status = "ok"
            result.append(
                {
                    "name": row.name,
                    "checkpoint": row.position,
                    "lag_events": row.lag_events,
                    "lag_seconds": round(row.lag_seconds, 3),
                    "leader": leader,
                    "status": status,
                }
            )
        return result

    async def rebuild(
        self, name: str, from_position: int = 0, types: Sequence[str] | None = None
    ) -> Job:
        """Start rebuilding projection `name` as a job (see `ProjectionRunner.rebuild`)."""
        if name not in self.rebuilder.names:
            raise UnknownProjection(
                f"no projection {name!r}; known: {', '.join(self.rebuilder.names)}"
            )
        if any(job.subject == name for job in await self.jobs.running(REBUILD)):
            raise RebuildRunning(f"a rebuild of {name!r} is running already")
        chosen = list(types) if types else None

        async def work(progress: Progress) -> int:
            return await self.rebuilder.rebuild(
                name, from_position=from_position, types=chosen, progress=progress
            )

        return await self.jobs.start(REBUILD, name, work)

    async def job(self, job_id: str) -> Job:
        return await self.jobs.get(job_id)

    async def outbox(self) -> dict[str, Any]:
        stats = await self.store.outbox_stats()
        oldest: datetime | None = stats.oldest_created_at
        age = 0.0 if oldest is None else max(0.0, (self.clock.now() - oldest).total_seconds())
        return {
            "backlog": stats.backlog,
            "oldest_age_seconds": round(age, 3),
            "relay_leader": (await self.leases()).get(self.relay_lease),
        }

    async def cache_stats(self) -> dict[str, Any]:
        return await self.cache()
