"""/admin/users: list users and change their roles (admins only)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import orjson
from msgspec import Meta, Struct
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.identity_schemas import SetRolesRequest, UserOut, UserPage
from banking_es.api.routes.auth import user_json
from banking_es.api.routing import Call, operation
from banking_es.identity.service import IdentityService


class UsersQuery(Struct, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20
    cursor: Annotated[str, Meta(max_length=64, description="next_cursor")] | None = None


class AdminRoutes:
    """The user administration routes, over the identity service."""

    def __init__(self, identity: IdentityService) -> None:
        self.identity = identity

    @operation(
        "GET",
        "/admin/users",
        "List users (by id)",
        query=UsersQuery,
        response=UserPage,
        problems=(400, 401, 403),
    )
    async def list_users(self, call: Call) -> Response:
        query: UsersQuery = call.query
        limit = query.limit
        users = await self.identity.users.page(render.decode_id_cursor(query.cursor), limit + 1)
        page = users[:limit]
        body = {
            "data": [user_json(u) for u in page],
            "has_more": len(users) > limit,
            "next_cursor": page[-1].id if len(users) > limit else None,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @operation(
        "PATCH",
        "/admin/users/{user_id}",
        "Set a user's roles (recorded with who made the change; ends the user's logins)",
        params={"user_id": UUID},
        body=SetRolesRequest,
        response=UserOut,
        problems=(400, 401, 403, 404, 415),
    )
    async def set_roles(self, call: Call) -> Response:
        body: SetRolesRequest = call.body
        admin = call.caller.identity
        user = await self.identity.set_roles(str(call.params["user_id"]), body.roles, admin.user_id)
        return Response(orjson.dumps(user_json(user)), media_type="application/json")
