"""Dependencies for routes: the services container, the caller, the JSON route class."""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response
from starlette.types import Scope

from banking_es.api.jsonbody import DecimalJSONRequest
from banking_es.api.problems import ApiError
from banking_es.identity.errors import MissingToken
from banking_es.identity.service import Principal

if TYPE_CHECKING:
    from banking_es.bootstrap import Services


class JSONRoute(APIRoute):
    """Routes whose JSON bodies keep exact decimals and must be sent as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        has_body = self.body_field is not None

        async def route_handler(request: Request) -> Response:
            request = DecimalJSONRequest(request.scope, request.receive)
            if has_body:
                content_type = request.headers.get("content-type")
                if content_type is None and await request.body():
                    content_type = "(none)"  # a body must say what it is
                if content_type and not _is_json(content_type):
                    raise ApiError(
                        415,
                        "unsupported_media_type",
                        "send the body as application/json (Content-Type header)",
                    )
            return await handler(request)

        return route_handler


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated["Services", Depends(get_services)]


bearer = HTTPBearer(
    auto_error=False,
    description="An access token from POST /auth/login (or /auth/refresh).",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the authenticated user (from the bearer token) and the client."""

    user_id: str | None
    client_id: str | None
    request_id: str | None
    principal: Principal | None = None

    @property
    def idempotency_scope(self) -> str:
        if self.user_id:
            return f"user:{self.user_id}"
        if self.client_id:
            return f"client:{self.client_id}"
        return "anonymous"

    @property
    def identity(self) -> Principal:
        if self.principal is None:
            raise MissingToken("a bearer token is required")
        return self.principal


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The authenticated caller; 401 `unauthenticated` without a valid access token."""
    if credentials is None:
        raise MissingToken("a bearer token is required (Authorization: Bearer <token>)")
    principal = (await get_services(request)).identity.authenticate(credentials.credentials)
    return make_caller(request.scope, principal, request.headers.get("x-client-id"))


def make_caller(scope: Scope, principal: Principal, client_id: str | None) -> Caller:
    """The caller of an authenticated request (its user id also goes to the access log)."""
    state = scope.setdefault("state", {})
    state["user_id"] = principal.user_id
    return Caller(
        user_id=principal.user_id,
        client_id=client_id[:255] if client_id else None,
        request_id=state.get("request_id"),
        principal=principal,
    )


CallerDep = Annotated[Caller, Depends(get_caller)]
