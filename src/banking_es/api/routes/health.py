"""/health/live and /health/ready (API.md, "Operations")."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import Response

from banking_es.api.deps import ServicesDep

router = APIRouter(prefix="/health", tags=["operations"])


class Readiness(BaseModel):
    """`ok` and `degraded` answer 200, `down` 503; each component has a `status` and details."""

    status: Literal["ok", "degraded", "down"]
    components: dict[str, dict[str, Any]]


@router.get("/live", summary="The process is serving")
async def live() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/ready",
    summary="Readiness of every component: ok, degraded (still serving) or down (503)",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a required component is down"}},
)
async def ready(services: ServicesDep) -> Response:
    # The checks are registered in bootstrap (`Services.health`); see observability/health.py.
    readiness = await services.health.run()
    body = orjson.dumps({"status": readiness.status, "components": readiness.components})
    return Response(body, status_code=readiness.http_status, media_type="application/json")
