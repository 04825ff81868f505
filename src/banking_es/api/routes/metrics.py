"""GET /metrics: Prometheus text format, summed over every worker process (API.md)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.responses import Response

from banking_es.api.deps import ServicesDep
from banking_es.observability.gauges import refresh_gauges

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of all workers (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "the metrics"}},
)
async def metrics(services: ServicesDep) -> Response:
    # With Kafka the consumer group drives the projections (as in readiness), not the runner.
    statuses = services.kafka or services.projections
    await refresh_gauges(services.metrics, services.store, statuses, services.clock)
    services.export_metrics()
    # Merging the workers' files reads the disk: keep it off the event loop.
    body = await asyncio.to_thread(services.metrics.render)
    return Response(body, media_type=services.metrics.content_type)
