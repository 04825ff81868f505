"""GET /metrics: Prometheus text format, summed over every worker process (API.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response

from banking_es.api.routing import Call, operation


class MetricsRoutes:
    def __init__(self, scrape: Callable[[], Awaitable[bytes]], content_type: str) -> None:
        self.scrape = scrape  # refreshes the gauges, then renders every worker's metrics
        self.content_type = content_type

    @operation(
        "GET",
        "/metrics",
        "Prometheus metrics of all workers (text exposition format)",
        auth=False,
        media_type="text/plain",
    )
    async def metrics(self, call: Call) -> Response:
        return Response(await self.scrape(), media_type=self.content_type)
