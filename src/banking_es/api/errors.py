"""One handler per exception family: domain, application, store, validation, HTTP, bugs."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from banking_es.api.jsonbody import DUPLICATE_KEY
from banking_es.api.middleware import SECURITY_HEADERS
from banking_es.api.problems import ApiError, problem_body, problem_response
from banking_es.application import errors as app_errors
from banking_es.domain import errors as domain_errors
from banking_es.eventstore.base import StoreUnavailable

log = logging.getLogger("banking_es.api")

DOMAIN_STATUS: dict[type[domain_errors.DomainError], int] = {
    domain_errors.InvalidAmount: 400,
    domain_errors.InvalidAccountData: 400,
    domain_errors.SameAccount: 400,
    domain_errors.AccountClosed: 409,
    domain_errors.InsufficientFunds: 422,
    domain_errors.BalanceNotZero: 422,
    domain_errors.CurrencyMismatch: 422,
    domain_errors.BalanceLimitExceeded: 422,
}

APP_STATUS: dict[type[app_errors.ApplicationError], int] = {
    app_errors.NotFound: 404,
    app_errors.VersionConflict: 409,
    app_errors.IdempotencyInFlight: 409,
    app_errors.IdempotencyKeyReused: 422,
    app_errors.ServiceUnavailable: 503,
}


def _status_for(exc: Exception) -> int:
    table: dict[Any, int] = (
        DOMAIN_STATUS if isinstance(exc, domain_errors.DomainError) else APP_STATUS
    )
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return 500


def render_known_error(exc: Exception) -> tuple[int, bytes, dict[str, str]]:
    """Status, problem body and headers for a domain or application error."""
    if isinstance(exc, domain_errors.DomainError | app_errors.ApplicationError):
        status = _status_for(exc)
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if isinstance(exc, app_errors.VersionConflict):
            extra["current_version"] = exc.current_version
        if isinstance(exc, app_errors.ServiceUnavailable):
            headers["Retry-After"] = str(exc.retry_after)
        errors = None
        if isinstance(exc, domain_errors.InvalidAmount):  # as if the schema had refused it
            message = str(exc).removeprefix(f"{exc.field} ")
            errors = [{"field": exc.field, "message": message}]
        body = problem_body(status, exc.code, str(exc), errors=errors, extra=extra)
        return status, body, headers
    raise TypeError(f"not a known error: {exc!r}")


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not allowed"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be an integer"
    if kind == "string_type":
        return "must be a string"
    if kind == "uuid_parsing" or kind == "uuid_type":
        return "must be a UUID"
    if kind == "string_pattern_mismatch":
        return "has an invalid format"
    msg = str(error.get("msg", "is invalid"))
    return msg[0].lower() + msg[1:] if msg else "is invalid"


def validation_problems(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    for error in errors:
        field = _field_name(tuple(error.get("loc", ())))
        problems.append({"field": field, "message": _message(error)})
    return problems


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    invalid = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid:
        reason = str((invalid[0].get("ctx") or {}).get("error", ""))
        if reason.startswith(DUPLICATE_KEY):  # the rest says nothing a client can use
            return problem_response(
                400, "invalid_json", f"the request body is not valid JSON: {reason}"
            )
        return problem_response(400, "invalid_json", "the request body is not valid JSON")
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "missing" for e in errors):
        return problem_response(400, "invalid_json", "a JSON object body is required")
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return problem_response(
            400,
            "validation_error",
            "the request body must be a JSON object",
            errors=[{"field": "", "message": "the request body must be a JSON object"}],
        )
    problems = validation_problems(errors)
    message = ", ".join(f"{p['field']} {p['message']}".strip() for p in problems)
    # Field names and our messages only: never the rejected values (a password, a token).
    log.info(
        "validation failed: %s",
        message,
        extra={"reason": "validation_error", "fields": [p["field"] for p in problems]},
    )
    return problem_response(400, "validation_error", message, errors=problems)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    log.info(
        "request refused: %s (%s)",
        exc.code,
        exc.status,
        extra={"reason": exc.code, "status": exc.status},
    )
    return problem_response(
        exc.status, exc.code, exc.message, errors=exc.errors, headers=exc.headers, extra=exc.extra
    )


async def _on_known(request: Request, exc: Exception) -> Response:
    status, body, headers = render_known_error(exc)
    code = getattr(exc, "code", type(exc).__name__)
    log.info("request refused: %s (%s)", code, status, extra={"reason": code, "status": status})
    return Response(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


async def _on_store_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("event store unavailable: %s", exc)
    return problem_response(
        503,
        "service_unavailable",
        "the database is unavailable; retry shortly",
        headers={"Retry-After": "1"},
    )


_HTTP_CODES = {
    400: "invalid_json",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return problem_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


async def _on_bug(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "?")
    log.exception("unhandled error (request id %s)", request_id)
    # Starlette answers a bug outside our middleware: add its headers here.
    return problem_response(
        500,
        "internal_error",
        f"internal error; quote request id {request_id} when reporting it",
        headers={"x-request-id": request_id, **SECURITY_HEADERS},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(domain_errors.DomainError, _on_known)
    app.add_exception_handler(app_errors.ApplicationError, _on_known)
    app.add_exception_handler(StoreUnavailable, _on_store_unavailable)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_bug)
