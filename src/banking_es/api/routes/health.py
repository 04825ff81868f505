"""/health/live and /health/ready (API.md, "Operations")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from banking_es.api.deps import ServicesDep

router = APIRouter(prefix="/health", tags=["operations"])

CHECK_TIMEOUT = 0.8  # each check runs concurrently; the whole answer stays under a second


@router.get("/live", summary="The process is serving")
async def live() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def _timed(check: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        return {"status": "down", "error": f"no answer within {CHECK_TIMEOUT}s"}
    except Exception as exc:
        return {"status": "down", "error": str(exc) or type(exc).__name__}


@router.get(
    "/ready",
    summary="Readiness of every component: ok, degraded (still serving) or down (503)",
    responses={503: {"description": "a required component is down"}},
)
async def ready(services: ServicesDep) -> Response:
    settings = services.settings

    async def event_store() -> dict[str, Any]:
        await services.store.ping()
        return {"status": "ok", "backend": services.db.dialect}

    async def projections() -> dict[str, Any]:
        if services.kafka is not None:  # Kafka drives the projections
            rows = await services.kafka.projection_status(services.store)
        else:
            rows = await services.projections.status()
        worst = max((r.lag_seconds for r in rows), default=0.0)
        status = "degraded" if worst > settings.projection_lag_degraded else "ok"
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
        stats = await services.store.outbox_stats()
        age = 0.0
        if stats.oldest_created_at is not None:
            age = max(0.0, (services.clock.now() - stats.oldest_created_at).total_seconds())
        status = "degraded" if age > settings.outbox_age_degraded else "ok"
        return {"status": status, "backlog": stats.backlog, "oldest_age_seconds": round(age, 3)}

    names = ["event_store", "projections", "outbox"]
    checks = [event_store, projections, outbox]
    if services.kafka is not None:
        names.append("kafka")
        checks.append(services.kafka.health)
    results = await asyncio.gather(*(_timed(c()) for c in checks))
    components = dict(zip(names, results, strict=True))
    if components["event_store"]["status"] == "down":
        overall = "down"
    elif any(c["status"] != "ok" for c in components.values()):
        overall = "degraded"
    else:
        overall = "ok"
    body = orjson.dumps({"status": overall, "components": components})
    return Response(
        body, status_code=503 if overall == "down" else 200, media_type="application/json"
    )
