"""/admin/projections, /admin/jobs, /admin/cache, /admin/outbox, /admin/shards (API.md).

Thin: parse, check the role, call `AdminService` (application/admin.py), render. Auditors
and admins read; only admins start a rebuild. 401 without a token, 403 for customers.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Path
from starlette.responses import Response

from banking_es.api.admin_schemas import (
    CacheOut,
    JobOut,
    OutboxOut,
    ProjectionList,
    RebuildRequest,
    RebuildStarted,
)
from banking_es.api.deps import CallerDep, JSONRoute, ServicesDep
from banking_es.api.problems import ApiError
from banking_es.api.routes.accounts import _problems
from banking_es.application.admin import AdminService, RebuildRunning, UnknownProjection
from banking_es.application.jobs import JobNotFound
from banking_es.application.ports import Job
from banking_es.identity.service import require_admin, require_reader
from banking_es.shards.report import shard_report, single_instance_report

router = APIRouter(prefix="/admin", tags=["admin"], route_class=JSONRoute)


def _admin_service(services: ServicesDep) -> AdminService:
    return services.admin


async def _reader(caller: CallerDep) -> None:
    require_reader(caller.identity)


async def _writer(caller: CallerDep) -> None:
    require_admin(caller.identity)


AdminDep = Annotated[AdminService, Depends(_admin_service)]
READ = [Depends(_reader)]
WRITE = [Depends(_writer)]


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


@router.get(
    "/projections",
    summary="Each projection's checkpoint, lag, leader and status (admin, auditor)",
    description="`status`: `rebuilding` while a rebuild job runs, `stalled` when no process"
    " holds the projections' lease and events wait, `lagging` beyond PROJECTION_LAG_DEGRADED,"
    " else `ok`. Whichever drives the projections: the store-following runner or, with Kafka,"
    " the consumer group.",
    response_model=ProjectionList,
    responses=_problems(401, 403),
    dependencies=READ,
)
async def list_projections(admin: AdminDep) -> Response:
    return _json({"data": await admin.projection_status()})


@router.post(
    "/projections/{name}/rebuild",
    summary="Rebuild a projection as a job (admin); follow it at GET /admin/jobs/{id}",
    description="The rebuild of `banking-es projections rebuild`: without `types`, the rows"
    " after `from_position` are reset and the projection catches up; with `types`, only the"
    " rows of those event types are rebuilt. 409 `rebuild_running` while one runs.",
    status_code=202,
    response_model=RebuildStarted,
    responses=_problems(400, 401, 403, 404, 409, 415),
    dependencies=WRITE,
)
async def rebuild_projection(
    name: Annotated[str, Path(max_length=64)], body: RebuildRequest, admin: AdminDep
) -> Response:
    try:
        job = await admin.rebuild(name, body.from_position, body.types)
    except UnknownProjection as exc:
        raise ApiError(404, "projection_not_found", str(exc)) from None
    except RebuildRunning as exc:
        raise ApiError(409, "rebuild_running", str(exc)) from None
    return _json({"job_id": job.id}, 202, {"Location": f"/admin/jobs/{job.id}"})


@router.get(
    "/jobs/{job_id}",
    summary="A job's status and progress (admin, auditor)",
    description="A job whose process died is `failed` with the reason, never `running` for"
    " ever: a running job's process writes a heartbeat, and a stale one fails it.",
    response_model=JobOut,
    responses=_problems(400, 401, 403, 404),
    dependencies=READ,
)
async def get_job(job_id: UUID, admin: AdminDep) -> Response:
    try:
        job = await admin.job(str(job_id))
    except JobNotFound as exc:
        raise ApiError(404, "job_not_found", str(exc)) from None
    return _json(job_json(job))


@router.get(
    "/cache",
    summary="This process's cache counts; Redis's own entries, evictions, memory (admin, auditor)",
    response_model=CacheOut,
    responses=_problems(401, 403),
    dependencies=READ,
)
async def cache_stats(admin: AdminDep) -> Response:
    return _json(await admin.cache_stats())


@router.get(
    "/outbox",
    summary="Outbox backlog, age of its oldest row, and the relay's leader (admin, auditor)",
    response_model=OutboxOut,
    responses=_problems(401, 403),
    dependencies=READ,
)
async def outbox_status(admin: AdminDep) -> Response:
    return _json(await admin.outbox())


@router.get(
    "/shards",
    summary="Every shard's status, owner, epoch and load, and the instances (admin, auditor)",
    responses=_problems(401, 403),
    dependencies=READ,
)
async def shards_status(services: ServicesDep) -> Response:
    if services.sharding is None:
        settings = services.settings
        report = single_instance_report(
            settings.effective_instance_id,
            settings.effective_instance_url,
            settings.shard_count,
            services.clock.now(),
        )
        return _json(report)
    return _json(await shard_report(services.sharding.manager.leases))


@router.post(
    "/shards/rebalance",
    summary="Run a rebalancing round now (admin); moves start as handovers",
    status_code=202,
    responses=_problems(401, 403),
    dependencies=WRITE,
)
async def shards_rebalance(services: ServicesDep) -> Response:
    moves = [] if services.sharding is None else await services.sharding.manager.rebalance()
    body = [{"shard": m.shard, "from": m.source, "to": m.target} for m in moves]
    return _json({"moves": body}, status=202)
