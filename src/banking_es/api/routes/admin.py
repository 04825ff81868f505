"""/admin/users: list users and change their roles (admins only)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.deps import CallerDep, JSONRoute, ServicesDep
from banking_es.api.identity_schemas import SetRolesRequest, UserOut, UserPage
from banking_es.api.routes.accounts import _problems
from banking_es.api.routes.auth import user_json
from banking_es.identity.service import require_admin

router = APIRouter(prefix="/admin", tags=["admin"], route_class=JSONRoute)


@router.get(
    "/users",
    summary="List users (by id)",
    response_model=UserPage,
    responses=_problems(400, 401, 403),
)
async def list_users(
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64, description="next_cursor")] = None,
) -> Response:
    require_admin(caller.identity)
    users = await services.identity.users.page(render.decode_id_cursor(cursor), limit + 1)
    page = users[:limit]
    body = {
        "data": [user_json(u) for u in page],
        "has_more": len(users) > limit,
        "next_cursor": page[-1].id if len(users) > limit else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.patch(
    "/users/{user_id}",
    summary="Set a user's roles (recorded with who made the change; ends the user's logins)",
    response_model=UserOut,
    responses=_problems(400, 401, 403, 404, 415),
)
async def set_roles(
    user_id: UUID, body: SetRolesRequest, services: ServicesDep, caller: CallerDep
) -> Response:
    require_admin(caller.identity)
    user = await services.identity.set_roles(str(user_id), body.roles, caller.identity.user_id)
    return Response(orjson.dumps(user_json(user)), media_type="application/json")
