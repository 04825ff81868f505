"""Plain ASGI middleware (no BaseHTTPMiddleware): request id, body size limit, access log."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banking_es.api.problems import problem_body

MAX_BODY = 64 * 1024
log = logging.getLogger("banking_es.access")


class RequestContextMiddleware:
    """Echo or assign `x-request-id`, refuse bodies over 64 KiB, log one line per request."""

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id")
        if not request_id or len(request_id) > 200 or not request_id.isascii():
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        rid = request_id.encode()
        started = time.perf_counter()
        status_holder: list[int] = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid))
                message["headers"] = headers
            await send(message)

        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _too_large(send_with_id, self.max_body)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            await _too_large(send_with_id, self.max_body)
        finally:
            if log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                log.info(
                    "%s %s %s %.1fms",
                    scope.get("method"),
                    getattr(route, "path", scope.get("path")),
                    status_holder[0],
                    (time.perf_counter() - started) * 1000,
                    extra={"request_id": request_id, "status": status_holder[0]},
                )


class _BodyTooLarge(HTTPException):
    """Raised from `receive`; FastAPI re-raises HTTP exceptions from body reading as they are."""

    def __init__(self) -> None:
        super().__init__(413, f"the request body is over {MAX_BODY // 1024} KiB")


async def _too_large(send: Any, limit: int) -> None:
    body = problem_body(413, "payload_too_large", f"the request body is over {limit // 1024} KiB")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
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
