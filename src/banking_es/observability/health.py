"""Readiness: a registry of named component checks, run concurrently under a timeout.

Each check is an async function returning ``{"status": "ok"|"degraded"|"down", ...details}``;
one that raises, or does not answer within `timeout`, is ``down``, so /health/ready answers in
well under a second even when a component hangs. Overall: ``down`` (503) when a *critical*
component is down (the event store), ``degraded`` (200) when any other is not ok, else ``ok``.
The composition root registers the checks (docs/observability.md, "Readiness").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from banking_es.application.ports import Clock, ProjectionStatus
from banking_es.eventstore.base import OutboxStats

T = TypeVar("T")
Status = Literal["ok", "degraded", "down"]
Check = Callable[[], Awaitable[dict[str, Any]]]

#: Each check's budget; they run concurrently, and a loaded event loop needs the rest of the
#: second to notice the timeout and answer, so the whole answer stays under a second.
CHECK_TIMEOUT = 0.6


_abandoned: set[asyncio.Task[Any]] = set()


def _forget(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


async def bounded(work: Awaitable[T], timeout: float) -> T:
    """`work`'s result, or TimeoutError after `timeout` seconds, whatever `work` does then.

    Unlike `asyncio.wait_for`, this does not wait for the cancelled work to finish: a
    driver cleaning up a connection to a hung server (asyncpg releasing it to the pool,
    say) may itself hang, and the caller must still answer in time.
    """
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        return task.result()
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_forget)
    raise TimeoutError(f"no answer within {timeout}s")


@dataclass(frozen=True, slots=True)
class Readiness:
    status: Status
    components: dict[str, dict[str, Any]]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "down" else 200


@dataclass(slots=True)
class HealthChecks:
    """Named checks; `critical` ones make the whole service down when they are down."""

    timeout: float = CHECK_TIMEOUT
    _checks: dict[str, tuple[Check, bool]] = field(default_factory=dict)

    def add(self, name: str, check: Check, *, critical: bool = False) -> None:
        self._checks[name] = (check, critical)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self) -> Readiness:
        names = list(self._checks)
        results = await asyncio.gather(*(self._timed(self._checks[n][0]) for n in names))
        components = dict(zip(names, results, strict=True))
        if any(components[n]["status"] == "down" and self._checks[n][1] for n in names):
            overall: Status = "down"
        elif any(c["status"] != "ok" for c in components.values()):
            overall = "degraded"
        else:
            overall = "ok"
        return Readiness(overall, components)

    async def _timed(self, check: Check) -> dict[str, Any]:
        try:
            result = await bounded(check(), self.timeout)
        except TimeoutError:
            return {"status": "down", "error": f"no answer within {self.timeout}s"}
        except Exception as exc:
            return {"status": "down", "error": str(exc) or type(exc).__name__}
        if result.get("status") not in ("ok", "degraded", "down"):
            return {"status": "down", "error": f"check answered {result!r}"}
        return result


class _Store(Protocol):
    async def head_position(self) -> int: ...

    async def outbox_stats(self) -> OutboxStats: ...


class _Projections(Protocol):
    async def status(self) -> list[ProjectionStatus]: ...


def core_checks(
    store: _Store,
    projections: _Projections,
    clock: Clock,
    *,
    dialect: str,
    projection_lag_degraded: float,
    outbox_age_degraded: float,
    timeout: float = CHECK_TIMEOUT,
) -> HealthChecks:
    """event_store (a read of the events table), projections (lag) and outbox (age)."""
    checks = HealthChecks(timeout=timeout)

    async def event_store() -> dict[str, Any]:
        # The events table itself, not `SELECT 1`: a lock on it must show here.
        head = await store.head_position()
        return {"status": "ok", "backend": dialect, "head_position": head}

    async def projection_lag() -> dict[str, Any]:
        rows = await projections.status()
        worst = max((r.lag_seconds for r in rows), default=0.0)
        status = "degraded" if worst > projection_lag_degraded else "ok"
        return {
            "status": status,
            "projections": {
                r.name: {
                    "position": r.position,
                    "lag_events": r.lag_events,
                    "lag_seconds": round(r.lag_seconds, 3),
                }
                for r in rows
            },
        }

    async def outbox() -> dict[str, Any]:
        stats = await store.outbox_stats()
        age = 0.0
        if stats.oldest_created_at is not None:
            age = max(0.0, (clock.now() - stats.oldest_created_at).total_seconds())
        status = "degraded" if age > outbox_age_degraded else "ok"
        return {"status": status, "backlog": stats.backlog, "oldest_age_seconds": round(age, 3)}

    checks.add("event_store", event_store, critical=True)
    checks.add("projections", projection_lag)
    checks.add("outbox", outbox)
    return checks
