"""/health/live and /health/ready (API.md, "Operations")."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from banking_es.api.deps import ServicesDep

router = APIRouter(prefix="/health", tags=["operations"])


@router.get("/live", summary="The process is serving")
async def live() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/ready",
    summary="Readiness of every component: ok, degraded (still serving) or down (503)",
    responses={503: {"description": "a required component is down"}},
)
async def ready(services: ServicesDep) -> Response:
    # The checks are registered in bootstrap (`Services.health`); see observability/health.py.
    readiness = await services.health.run()
    body = orjson.dumps({"status": readiness.status, "components": readiness.components})
    return Response(body, status_code=readiness.http_status, media_type="application/json")
