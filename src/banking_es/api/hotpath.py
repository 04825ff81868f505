"""The three hottest routes without FastAPI's routing and dependency solving.

`GET /accounts/{id}`, `POST /accounts/{id}/deposit` and `POST /accounts/{id}/withdraw` are
most of a bank's traffic. FastAPI spends more CPU finding the route and solving its
dependencies (bearer scheme, services, caller, rate limit, body model) than the service
spends on the request. `HotPathMiddleware` serves the ordinary form of these requests
itself and calls the very same route functions, with the same arguments FastAPI would
have given them, and the same exception handlers; everything else goes to FastAPI.

Only requests that are certain to be well-formed take the fast path: a canonical
lowercase UUID, no query string (GET), a bearer token that verifies, a JSON body that
`MoneyRequest` accepts. Anything else (a bad token, a malformed body, a query, an odd
header) is handed to FastAPI untouched, before anything has run, so every error answer
comes from one place. Tracing turns the fast path off: traces show FastAPI's spans.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banking_es.api.deps import Caller, make_caller
from banking_es.api.jsonbody import DecimalJSONRequest, loads
from banking_es.api.ratelimit import limit_client
from banking_es.api.routes import accounts
from banking_es.api.schemas import MoneyRequest
from banking_es.identity.errors import IdentityError
from banking_es.observability.tracing import tracing_enabled

if TYPE_CHECKING:
    from banking_es.bootstrap import Services

_PATH = re.compile(
    r"/accounts/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"(/deposit|/withdraw)?"
)
#: The headers read here (Idempotency-Key only so that a repeated one goes to FastAPI).
_WANTED = (b"authorization", b"content-type", b"x-client-id", b"idempotency-key")
Handler = Callable[[DecimalJSONRequest, Exception], Awaitable[Response]]


class HotPathMiddleware:
    """Serves the hot account routes directly; hands every other request to `app`."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        endpoints = {accounts.get_account, accounts.deposit, accounts.withdraw}
        self.routes: dict[Any, BaseRoute] = {
            getattr(r, "endpoint", None): r
            for r in accounts.router.routes
            if getattr(r, "endpoint", None) in endpoints
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or tracing_enabled():
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        method = scope["method"]
        if match is None or not _routable(method, match.group(2), scope):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if headers is None:
            await self.app(scope, receive, send)
            return
        services: Services = self.fastapi.state.services
        caller = _caller(services, scope, headers)
        if caller is None:
            await self.app(scope, receive, send)
            return
        account_id = UUID(match.group(1))
        request = DecimalJSONRequest(scope, receive)
        run: Callable[[], Awaitable[Response]]
        if method == "GET":
            endpoint: Any = accounts.get_account

            def run() -> Awaitable[Response]:
                return accounts.get_account(account_id, services, caller, as_of=None, version=None)

        else:
            body = await _read_body(receive)
            parsed = _money_request(headers, body)
            if parsed is None:  # FastAPI answers it, from the body already read
                await self.app(scope, _replay(body, receive), send)
                return
            request._body = body
            endpoint = accounts.deposit if match.group(2) == "/deposit" else accounts.withdraw

            def run() -> Awaitable[Response]:
                return endpoint(account_id, parsed, request, services, caller)  # type: ignore[no-any-return]

        scope["route"] = self.routes[endpoint]
        try:
            if services.rate_limiter is not None:
                await limit_client(request, caller)
            response = await run()
        except Exception as exc:
            handler = _handler(self.fastapi, exc)
            if handler is None:
                raise  # a bug: Starlette's server error handler answers 500
            response = await handler(request, exc)
        await response(scope, receive, send)


def _routable(method: str, operation: str | None, scope: Scope) -> bool:
    if operation is None:
        return method == "GET" and not scope.get("query_string")
    return method == "POST"


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers the fast path reads; None when one of them is repeated."""
    found: dict[bytes, bytes] = {}
    for key, value in scope["headers"]:
        if key in _WANTED:
            if key in found:
                return None
            found[key] = value
    return found


def _caller(services: Services, scope: Scope, headers: dict[bytes, bytes]) -> Caller | None:
    """The caller of a valid bearer token; None (FastAPI will answer 401) for anything else."""
    authorization = headers.get(b"authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        principal = services.identity.authenticate(token)
    except IdentityError:
        return None
    client_id = headers.get(b"x-client-id")
    return make_caller(
        scope, principal, client_id.decode("latin-1") if client_id is not None else None
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _money_request(headers: dict[bytes, bytes], body: bytes) -> MoneyRequest | None:
    """The body as `MoneyRequest` when it is plainly valid JSON for it; else None."""
    content_type = headers.get(b"content-type", b"")
    if content_type.partition(b";")[0].strip().lower() != b"application/json":
        return None
    try:
        data = loads(body)
        return MoneyRequest.model_validate(data) if isinstance(data, dict) else None
    except (ValueError, ValidationError, RecursionError):  # FastAPI words the error
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` once, then whatever the client sends next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _handler(app: FastAPI, exc: Exception) -> Handler | None:
    """The exception handler FastAPI's ExceptionMiddleware would pick (not the 500 one)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler  # type: ignore[return-value]
    return None
