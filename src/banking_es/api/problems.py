"""Problem details (RFC 9457) with the seed's `error` field and a stable `code` (API.md)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_TYPE = "application/problem+json"


class ApiError(Exception):
    """An HTTP-level refusal raised by the API layer itself (not the domain)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}


def problem_body(
    status: int,
    code: str,
    message: str,
    *,
    errors: list[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": message,
        "error": message,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return orjson.dumps(body)


def problem_response(
    status: int,
    code: str,
    message: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    return Response(
        problem_body(status, code, message, errors=errors, extra=extra),
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers=headers,
    )


def validation_error(errors: list[dict[str, str]]) -> ApiError:
    message = ", ".join(
        f"{e['field']} {e['message']}" if e["field"] else e["message"] for e in errors
    )
    return ApiError(400, "validation_error", message, errors=errors)
