"""The one way a request reaches a handler: Starlette finds the route (`Router`: its router,
trying only the routes that can match the path's first segment), `Endpoint` does the rest.

A handler is a method decorated with `@operation(...)`, which declares its path, parameters,
body model, answers and whether it needs a caller (bearer token) and the per-user rate limit.
`Endpoint` checks all of that for every route alike (415, invalid JSON, 401, 429, every
field problem in one 400), calls the handler with a `Call`, and turns the exceptions of the
domain, application and identity into problem+json (api/errors.py). api/openapi.py writes the
OpenAPI document from the same declarations.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette import routing as starlette_routing
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from banking_es.api import errors, fields
from banking_es.api.caller import Caller, authenticate, header
from banking_es.api.jsonbody import DUPLICATE_KEY, loads
from banking_es.api.problems import ApiError, validation_error
from banking_es.api.ratelimit import limit_client
from banking_es.identity.service import IdentityService, Principal
from banking_es.ratelimit.limiter import RateLimiter

Handler = Callable[["Call"], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """What a route takes and answers (its checks and its OpenAPI description)."""

    method: str
    path: str
    summary: str
    tag: str
    status: int = 200
    description: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # path parameter -> type
    query: type[msgspec.Struct] | None = None
    body: type[msgspec.Struct] | None = None
    body_required: bool = True
    response: Any = None  # the documented answer (a msgspec model), or None
    media_type: str = "application/json"
    problems: tuple[int, ...] = ()
    auth: bool = True
    #: The caller's role checked before any input (403 otherwise): `require_admin`, ...
    role: Callable[[Principal], None] | None = None
    rate_limited: bool = False
    responses: Mapping[int, dict[str, Any]] = field(default_factory=dict)
    name: str = ""  # the handler's name (the OpenAPI operationId)


def operation(method: str, path: str, summary: str, **options: Any) -> Callable[[Any], Any]:
    """Declares a handler method (`options` are `Operation`'s fields; `tag` from the class)."""

    def mark(function: Any) -> Any:
        function.__operation__ = (method, path, summary, options)
        return function

    return mark


def operations(routes: type, tag: str, **defaults: Any) -> list[tuple[Operation, str]]:
    """The operations declared on the methods of class `routes`, with their method names."""
    found = []
    for name, function in vars(routes).items():
        declared = getattr(function, "__operation__", None)
        if declared is not None:
            method, path, summary, options = declared
            op = Operation(method, path, summary, tag, **{**defaults, **options, "name": name})
            found.append((op, name))
    return found


class Call:
    """One request as a handler sees it: checked parameters, body and caller."""

    __slots__ = ("body", "caller", "params", "query", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.params: dict[str, Any] = {}
        self.query: Any = None
        self.body: Any = None
        self.caller: Caller = _ANONYMOUS

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    def header(self, name: bytes) -> str | None:
        return header(self.scope, name)


_ANONYMOUS = Caller(None, None, None)
#: A required body that was not sent (refused after authentication, as any field problem).
_MISSING = object()
#: No body, and none needed.
_ABSENT = object()


@dataclass
class Gate:
    """What every route shares: the bearer check and the per-user rate limit."""

    identity: IdentityService
    limiter: RateLimiter | None


class Endpoint:
    """The ASGI app of one route; `handler` and `gate` are bound when services exist."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.handler: Handler | None = None
        self.gate: Gate | None = None
        #: The query of a request without one, when every parameter has a default.
        self.no_query = fields.build(op.query, {}, [], extra=True) if op.query else None
        self.converters = {
            name: fields.converter(kind, text=True) for name, kind in op.params.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._answer(scope, receive)
        except Exception as exc:
            found = errors.problem_for(exc)
            if found is None:
                raise  # a bug: the server error handler answers 500
            response = found
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive) -> Response:
        op, handler, gate = self.op, self.handler, self.gate
        if handler is None or gate is None:
            raise ApiError(
                503, "service_unavailable", "the service is starting", headers={"Retry-After": "1"}
            )
        call = Call(scope)
        data = await self._json(scope, receive) if op.body is not None else _ABSENT
        if op.auth:
            call.caller = authenticate(gate.identity, scope)
            if op.role is not None:
                op.role(call.caller.identity)
            if op.rate_limited and gate.limiter is not None:
                await limit_client(gate.limiter, scope, call.caller)
        problems: fields.Problems = []
        for name, convert in self.converters.items():
            try:
                call.params[name] = convert(scope["path_params"][name])
            except fields.FieldError as exc:
                problems.append({"field": name, "message": str(exc)})
        if op.query is not None:
            raw = scope["query_string"]
            if not raw and self.no_query is not None:
                call.query = self.no_query
            else:
                query = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
                call.query = fields.build(op.query, query, problems, extra=True)
        if data is _MISSING:
            raise ApiError(400, "invalid_json", "a JSON object body is required")
        if op.body is not None and data is not _ABSENT and (data is not None or op.body_required):
            if not isinstance(data, dict):
                message = "the request body must be a JSON object"
                raise validation_error([{"field": "", "message": message}])
            call.body = fields.build(op.body, data, problems)
        if problems:
            raise validation_error(problems)
        return await handler(call)

    async def _json(self, scope: Scope, receive: Receive) -> Any:
        """The body's JSON (`_MISSING` or `_ABSENT` when empty): 415 unless declared JSON."""
        raw = await _read(receive)
        content_type = header(scope, b"content-type")
        if content_type is None and raw:
            content_type = "(none)"  # a body must say what it is
        if content_type and not _is_json(content_type):
            raise ApiError(
                415,
                "unsupported_media_type",
                "send the body as application/json (Content-Type header)",
            )
        if not raw:
            return _MISSING if self.op.body_required else _ABSENT
        try:
            return loads(raw)
        except json.JSONDecodeError as exc:
            if exc.msg.startswith(DUPLICATE_KEY):  # the rest says nothing a client can use
                message = f"the request body is not valid JSON: {exc.msg}"
                raise ApiError(400, "invalid_json", message) from None
            raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
        except (ValueError, RecursionError):
            raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None


_JSON_TYPES: dict[str, bool] = {}


def _is_json(content_type: str) -> bool:
    known = _JSON_TYPES.get(content_type)
    if known is None:
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        known = message.get_content_maintype() == "application" and (
            subtype == "json" or subtype.endswith("+json")
        )
        if len(_JSON_TYPES) < 64:  # the few types clients send; never grows without bound
            _JSON_TYPES[content_type] = known
    return known


async def _read(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class Router(starlette_routing.Router):
    """Starlette's router, trying only the routes whose first path segment can match (one
    regex per route of the whole table cost more than the rest of a `GET /health/live`),
    and answering its own refusals (404, 405, and an `HTTPException` of a plain route) as
    problem+json (`errors.on_http`): no `ExceptionMiddleware` is stacked (`BankingApp`)."""

    def __init__(self, routes: list[BaseRoute], **options: Any) -> None:
        super().__init__(routes, **options)
        self._index: dict[str, list[BaseRoute]] = {}
        self._open: list[BaseRoute] = []
        self._indexed = -1  # the length of `routes` indexed (routes may be added before use)

    def candidates(self, path: str) -> list[BaseRoute]:
        """The routes, in order, that may match `path` (the others cannot)."""
        if self._indexed != len(self.routes):
            self._build()
        end = path.find("/", 1)
        return self._index.get(path[1:end] if end > 0 else path[1:], self._open)

    def _build(self) -> None:
        index: dict[str, list[BaseRoute]] = {}
        open_routes: list[BaseRoute] = []  # any path may match them: in every list
        for route in self.routes:
            first = _first_segment(route)
            if first is None:
                open_routes.append(route)
                for routes in index.values():
                    routes.append(route)
            else:
                index.setdefault(first, list(open_routes)).append(route)
        self._index, self._open, self._indexed = index, open_routes, len(self.routes)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        try:
            partial: tuple[BaseRoute, Scope] | None = None
            for route in self.candidates(get_route_path(scope)):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
                if match is Match.PARTIAL and partial is None:
                    partial = (route, child_scope)
            if partial is not None:  # the path with another method: 405
                scope["route"] = partial[0]
                scope.update(partial[1])
                await partial[0].handle(scope, receive, send)
                return
            await super().app(scope, receive, send)  # no route: a redirect or 404
        except HTTPException as exc:
            response = await errors.on_http(Request(scope, receive), exc)
            await response(scope, receive, send)


def _first_segment(route: BaseRoute) -> str | None:
    """The literal first segment of a plain route's path; None when it has a parameter."""
    if type(route) is not Route:  # a mount or host matches by its own rules
        return None
    first = route.path[1:].split("/", 1)[0]
    return None if "{" in first else first
