"""/health/live and /health/ready (API.md, "Operations")."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from msgspec import Struct
from starlette.responses import Response

from banking_es.api.routing import Call, operation
from banking_es.observability.health import HealthChecks

#: One answer for every call: a `Response` keeps nothing of a request, and the middleware
#: copies its headers before adding its own.
_LIVE = Response(b'{"status":"ok"}', media_type="application/json")


class Readiness(Struct):
    """`ok` and `degraded` answer 200, `down` 503; each component has a `status` and details."""

    status: Literal["ok", "degraded", "down"]
    components: dict[str, dict[str, Any]]


class HealthRoutes:
    def __init__(self, health: HealthChecks) -> None:
        self.health = health

    @operation("GET", "/health/live", "The process is serving", auth=False)
    async def live(self, call: Call) -> Response:
        return _LIVE

    @operation(
        "GET",
        "/health/ready",
        "Readiness of every component: ok, degraded (still serving) or down (503)",
        auth=False,
        response=Readiness,
        responses={503: {"model": Readiness, "description": "a required component is down"}},
    )
    async def ready(self, call: Call) -> Response:
        # The checks are registered in bootstrap (`Services.health`); see observability/health.py.
        readiness = await self.health.run()
        body = orjson.dumps({"status": readiness.status, "components": readiness.components})
        return Response(body, status_code=readiness.http_status, media_type="application/json")
