"""The HTTP answer for identity errors (one handler for the whole family)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from banking_es.api.problems import problem_response
from banking_es.identity.errors import (
    AccountLocked,
    IdentityError,
    InvalidInput,
    MissingToken,
    Unauthenticated,
)


async def _on_identity(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdentityError)
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


def install(app: FastAPI) -> None:
    app.add_exception_handler(IdentityError, _on_identity)
