"""/admin/projections, /admin/jobs, /admin/cache, /admin/outbox (API.md).

Thin: parse, check the role, call `AdminService` (application/admin.py), render. Auditors
and admins read; only admins start a rebuild. 401 without a token, 403 for customers.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import orjson
from msgspec import Meta
from starlette.responses import Response

from banking_es.api.admin_schemas import (
    CacheOut,
    JobOut,
    OutboxOut,
    ProjectionList,
    RebuildRequest,
    RebuildStarted,
)
from banking_es.api.problems import ApiError
from banking_es.api.routing import Call, operation
from banking_es.application.admin import AdminService, RebuildRunning, UnknownProjection
from banking_es.application.jobs import JobNotFound
from banking_es.application.ports import Job
from banking_es.identity.service import require_reader


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": job.error,
    }


class AdminOpsRoutes:
    """The operations routes, over the admin service."""

    def __init__(self, admin: AdminService) -> None:
        self.admin = admin

    @operation(
        "GET",
        "/admin/projections",
        "Each projection's checkpoint, lag, leader and status (admin, auditor)",
        description="`status`: `rebuilding` while a rebuild job runs, `stalled` when no process"
        " holds the projections' lease and events wait, `lagging` beyond"
        " PROJECTION_LAG_DEGRADED, else `ok`. Whichever drives the projections: the"
        " store-following runner or, with Kafka, the consumer group.",
        response=ProjectionList,
        problems=(401, 403),
        role=require_reader,
    )
    async def list_projections(self, call: Call) -> Response:
        return _json({"data": await self.admin.projection_status()})

    @operation(
        "POST",
        "/admin/projections/{name}/rebuild",
        "Rebuild a projection as a job (admin); follow it at GET /admin/jobs/{id}",
        description="The rebuild of `banking-es projections rebuild`: without `types`, the rows"
        " after `from_position` are reset and the projection catches up; with `types`, only the"
        " rows of those event types are rebuilt. 409 `rebuild_running` while one runs.",
        status=202,
        params={"name": Annotated[str, Meta(max_length=64)]},
        body=RebuildRequest,
        response=RebuildStarted,
        problems=(400, 401, 403, 404, 409, 415),
    )
    async def rebuild_projection(self, call: Call) -> Response:
        body: RebuildRequest = call.body
        try:
            job = await self.admin.rebuild(call.params["name"], body.from_position, body.types)
        except UnknownProjection as exc:
            raise ApiError(404, "projection_not_found", str(exc)) from None
        except RebuildRunning as exc:
            raise ApiError(409, "rebuild_running", str(exc)) from None
        return _json({"job_id": job.id}, 202, {"Location": f"/admin/jobs/{job.id}"})

    @operation(
        "GET",
        "/admin/jobs/{job_id}",
        "A job's status and progress (admin, auditor)",
        description="A job whose process died is `failed` with the reason, never `running` for"
        " ever: a running job's process writes a heartbeat, and a stale one fails it.",
        params={"job_id": UUID},
        response=JobOut,
        problems=(400, 401, 403, 404),
        role=require_reader,
    )
    async def get_job(self, call: Call) -> Response:
        try:
            job = await self.admin.job(str(call.params["job_id"]))
        except JobNotFound as exc:
            raise ApiError(404, "job_not_found", str(exc)) from None
        return _json(job_json(job))

    @operation(
        "GET",
        "/admin/cache",
        "This process's cache counts; Redis's own entries, evictions, memory (admin, auditor)",
        response=CacheOut,
        problems=(401, 403),
        role=require_reader,
    )
    async def cache_stats(self, call: Call) -> Response:
        return _json(await self.admin.cache_stats())

    @operation(
        "GET",
        "/admin/outbox",
        "Outbox backlog, age of its oldest row, and the relay's leader (admin, auditor)",
        response=OutboxOut,
        problems=(401, 403),
        role=require_reader,
    )
    async def outbox_status(self, call: Call) -> Response:
        return _json(await self.admin.outbox())
