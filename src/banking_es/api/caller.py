"""Who is calling: the bearer token's user and the client, read from the request's headers."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from banking_es.identity.errors import MissingToken
from banking_es.identity.service import IdentityService, Principal


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


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lowercase), as Starlette's `headers.get` gives it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def authenticate(identity: IdentityService, scope: Scope) -> Caller:
    """The caller of a valid `Authorization: Bearer` token; 401 `unauthenticated` otherwise.

    Its user id is kept in the scope's state for the access log and the server span."""
    authorization = header(scope, b"authorization")
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken("a bearer token is required (Authorization: Bearer <token>)")
    principal = identity.authenticate(token)
    state = scope.setdefault("state", {})
    state["user_id"] = principal.user_id
    client_id = header(scope, b"x-client-id")
    return Caller(
        user_id=principal.user_id,
        client_id=client_id[:255] if client_id else None,
        request_id=state.get("request_id"),
        principal=principal,
    )
