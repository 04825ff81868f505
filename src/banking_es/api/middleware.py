"""Plain ASGI middleware (no BaseHTTPMiddleware): request id, security headers, body size
limit, access log, and the 500 of a bug (Starlette's own error middleware is not stacked)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from random import randbytes
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banking_es.api.problems import problem_body
from banking_es.logging_setup import REQUEST_ID, write_json_line
from banking_es.observability.metrics import UNMATCHED_ROUTE
from banking_es.observability.tracing import server_span

if TYPE_CHECKING:
    from banking_es.observability.metrics import Metrics

MAX_BODY = 64 * 1024
log = logging.getLogger("banking_es.access")
bug_log = logging.getLogger("banking_es.api")
#: Routes polled by machines: their access lines are logged at DEBUG, not INFO.
CLIENT_CLOSED = 499
QUIET_ROUTES = frozenset({"/metrics", "/health/live", "/health/ready"})
#: The JSON API loads nothing and is framed by nobody; the docs page has its own policy.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "content-security-policy": API_POLICY}
_API_HEADERS = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class RequestContextMiddleware:
    """Echo or assign `x-request-id`, add the security headers (`docs_policy` on `docs_path`),
    refuse bodies over 64 KiB, count and log one line per request, and (when tracing) make the
    HTTP server span."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Callable[[], Metrics | None],
        max_body: int = MAX_BODY,
        docs_path: str | None = None,
        docs_policy: str = API_POLICY,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.docs_path = docs_path
        self.docs_headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", docs_policy.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id")
        if not request_id or len(request_id) > 200 or not request_id.isascii():
            request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status_holder: list[int] = [0]
        method = str(scope["method"])
        failed = True
        with server_span(method, scope["path"], scope["headers"]) as span:
            try:
                await self._handle(scope, receive, send, request_id, status_holder)
                failed = False
            finally:
                REQUEST_ID.reset(token)
                elapsed = time.perf_counter() - started
                route = _route_template(scope)
                # No response sent: the client went away first (499, as nginx counts it), or
                # a bug struck before or while sending its 500.
                status = status_holder[0] or (500 if failed else CLIENT_CLOSED)
                if span.is_recording():
                    _describe(span, method, route, status, request_id, state)
                self._account(scope, state, route, method, status, elapsed, request_id)

    def _account(
        self,
        scope: Scope,
        state: dict[str, Any],
        route: str,
        method: str,
        status: int,
        elapsed: float,
        request_id: str,
    ) -> None:
        """The request's metrics and its access-log line."""
        metrics = self.metrics()
        if metrics is not None:
            metrics.observe_request(route, method, status, elapsed)
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        if log.isEnabledFor(level):
            fields: dict[str, Any] = {
                "method": method,
                "route": route,
                "path": scope.get("path"),
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "request_id": request_id,
            }
            user_id = state.get("user_id")
            if user_id:
                fields["user_id"] = user_id
            event = f"{method} {route} {status} {elapsed * 1000:.1f}ms"
            if not write_json_line(log.name, level, event, fields):
                log.log(level, event, extra=fields)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        status_holder: list[int],
    ) -> None:
        rid = request_id.encode()
        security = self.docs_headers if scope.get("path") == self.docs_path else _API_HEADERS

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid))
                headers.extend(security)
                message["headers"] = headers
            await send(message)

        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _too_large(send_with_id, self.max_body)
            return
        # With a length the server stops the body there; without, count what arrives.
        body = receive if length else _limited(receive, self.max_body)
        try:
            await self.app(scope, body, send_with_id)
        except _BodyTooLarge:
            await _too_large(send_with_id, self.max_body)
        except Exception:
            if not status_holder[0]:  # nothing sent yet: a 500 with our headers
                await _bug(send_with_id, request_id)
            raise  # the server logs it too (and a test client raises it)


def new_request_id() -> str:
    """A request's id when the client sent none: 32 hex digits, as `uuid4().hex` has, from
    `random` (ids must be unique, not secret; it is reseeded in a forked child) instead of
    a system call per request."""
    return randbytes(16).hex()


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge()
        return message

    return limited_receive


async def _bug(send: Send, request_id: str) -> None:
    bug_log.exception("unhandled error (request id %s)", request_id)
    message = f"internal error; quote request id {request_id} when reporting it"
    await _send_problem(send, 500, problem_body(500, "internal_error", message))


def _route_template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)  # Starlette's router sets the route
    return str(path) if path else UNMATCHED_ROUTE


def _describe(
    span: Span, method: str, route: str, status: int, request_id: str, state: dict[str, Any]
) -> None:
    if route != UNMATCHED_ROUTE:  # no route (404, a refused rate limit): the method alone
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("banking.request_id", request_id)
    if state.get("user_id"):
        span.set_attribute("enduser.id", str(state["user_id"]))
    if status >= 500:  # a 4xx is the client's, not ours
        span.set_status(StatusCode.ERROR)


class _BodyTooLarge(Exception):
    """Raised from `receive` when the body passes the limit; answered 413 here."""


async def _too_large(send: Send, limit: int) -> None:
    body = problem_body(413, "payload_too_large", f"the request body is over {limit // 1024} KiB")
    await _send_problem(send, 413, body)


async def _send_problem(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
