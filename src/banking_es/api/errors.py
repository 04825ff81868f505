"""Exceptions to problem+json: domain, application, identity, store, HTTP and API refusals, bugs.

`problem_for` answers every known exception where a route raised it (api/routing.py), `on_http`
the router's 404 and 405; a bug's 500 is the request middleware's (api/middleware.py).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from banking_es.api.problems import ApiError, problem_body, problem_response
from banking_es.application import errors as app_errors
from banking_es.application.statements import InvalidPeriod
from banking_es.domain import errors as domain_errors
from banking_es.eventstore.base import StoreUnavailable
from banking_es.identity.errors import (
    AccountLocked,
    IdentityError,
    InvalidInput,
    MissingToken,
    Unauthenticated,
)

log = logging.getLogger("banking_es.api")

DOMAIN_STATUS: dict[type[domain_errors.DomainError], int] = {
    domain_errors.InvalidAmount: 400,
    domain_errors.InvalidAccountData: 400,
    domain_errors.SameAccount: 400,
    domain_errors.AccountClosed: 409,
    domain_errors.AccountFrozen: 409,
    domain_errors.HoldNotPending: 409,
    domain_errors.AmountExceedsHold: 422,
    domain_errors.TooManyHolds: 422,
    domain_errors.HoldsPending: 422,
    domain_errors.InsufficientFunds: 422,
    domain_errors.BalanceNotZero: 422,
    domain_errors.CurrencyMismatch: 422,
    domain_errors.BalanceLimitExceeded: 422,
    domain_errors.AccountFrozen: 409,
    domain_errors.HoldNotPending: 409,
    domain_errors.AmountExceedsHold: 422,
    domain_errors.HoldsPending: 422,
    domain_errors.TooManyHolds: 422,
}

APP_STATUS: dict[type[app_errors.ApplicationError], int] = {
    InvalidPeriod: 400,
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
        elif isinstance(exc, InvalidPeriod):
            errors = [{"field": e.field, "message": e.message} for e in exc.errors]
        body = problem_body(status, exc.code, str(exc), errors=errors, extra=extra)
        return status, body, headers
    raise TypeError(f"not a known error: {exc!r}")


def problem_for(exc: Exception) -> Response | None:
    """The answer to an exception raised by a route; None for a bug (Starlette's 500)."""
    if isinstance(exc, ApiError):
        if exc.errors is not None:  # field names and our messages, never the values
            fields = [p["field"] for p in exc.errors]
            extra = {"reason": exc.code, "fields": fields}
            log.info("request refused: %s", exc.message, extra=extra)
        else:
            log.info(
                "request refused: %s (%s)",
                exc.code,
                exc.status,
                extra={"reason": exc.code, "status": exc.status},
            )
        return problem_response(
            exc.status,
            exc.code,
            exc.message,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )
    if isinstance(exc, domain_errors.DomainError | app_errors.ApplicationError):
        status, body, headers = render_known_error(exc)
        code = exc.code
        log.info("request refused: %s (%s)", code, status, extra={"reason": code, "status": status})
        return Response(
            body, status_code=status, media_type="application/problem+json", headers=headers
        )
    if isinstance(exc, IdentityError):
        return _identity_problem(exc)
    if isinstance(exc, StoreUnavailable):
        log.warning("event store unavailable: %s", exc)
        return problem_response(
            503,
            "service_unavailable",
            "the database is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )
    return None


def _identity_problem(exc: IdentityError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, MissingToken):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if isinstance(exc, AccountLocked):
        headers["Retry-After"] = str(exc.retry_after)
    errors = None
    if isinstance(exc, InvalidInput):
        errors = [{"field": exc.field, "message": exc.message}]
    return problem_response(exc.status, exc.code, str(exc), errors=errors, headers=headers)


_HTTP_CODES = {
    400: "invalid_json",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def on_http(request: Request, exc: Exception) -> Response:
    """The router's own refusals: no such path (404), or not with this method (405)."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return problem_response(exc.status_code, code, message, headers=dict(exc.headers or {}))
