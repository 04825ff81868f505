"""/auth: register, log in, refresh, log out, passwords, who am I (API.md, "Identity")."""

from __future__ import annotations

import logging

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from banking_es.api.identity_schemas import (
    ChangePasswordRequest,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RegisterRequest,
    ResetConfirmRequest,
    ResetRequest,
    TokenPairOut,
    UserOut,
)
from banking_es.api.routing import Call, operation
from banking_es.application.errors import ServiceUnavailable
from banking_es.identity.service import IdentityService
from banking_es.identity.tokens import TokenPair
from banking_es.identity.users import User

log = logging.getLogger(__name__)


def user_json(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "roles": list(user.roles),
    }


#: Tokens must not stay in a cache on the way (RFC 6749 5.1).
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _pair(pair: TokenPair) -> Response:
    return _json(
        {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "token_type": "bearer",
            "expires_in": pair.expires_in,
        },
        headers=NO_STORE,
    )


class AuthRoutes:
    """The /auth routes, over the identity service."""

    def __init__(self, identity: IdentityService, password_reset_enabled: bool) -> None:
        self.identity = identity
        self.password_reset_enabled = password_reset_enabled

    @operation(
        "POST",
        "/auth/register",
        "Create a customer user",
        status=201,
        auth=False,
        body=RegisterRequest,
        response=UserOut,
        problems=(400, 409, 415),
    )
    async def register(self, call: Call) -> Response:
        body: RegisterRequest = call.body
        user = await self.identity.register(body.username, body.email, body.password)
        return _json(user_json(user), 201)

    @operation(
        "POST",
        "/auth/login",
        "Log in with username (or email) and password",
        auth=False,
        body=LoginRequest,
        response=TokenPairOut,
        problems=(400, 401, 415, 429),
    )
    async def login(self, call: Call) -> Response:
        body: LoginRequest = call.body
        return _pair(await self.identity.login(body.username, body.password))

    @operation(
        "POST",
        "/auth/refresh",
        "Trade a refresh token for a new pair (the old one dies)",
        auth=False,
        body=RefreshRequest,
        response=TokenPairOut,
        problems=(400, 401, 415),
    )
    async def refresh(self, call: Call) -> Response:
        body: RefreshRequest = call.body
        return _pair(await self.identity.refresh(body.refresh_token))

    @operation(
        "POST",
        "/auth/logout",
        "End this login: its tokens are rejected from now on, by every process",
        status=204,
        body=LogoutRequest,
        body_required=False,
        problems=(400, 401, 415),
    )
    async def logout(self, call: Call) -> Response:
        body: LogoutRequest | None = call.body
        await self.identity.logout(call.caller.identity, body.refresh_token if body else None)
        return Response(status_code=204)

    @operation(
        "POST",
        "/auth/change-password",
        "Change the password; every other login of the user ends",
        description="A wrong current password counts as a failed login of both of the user's "
        "names: after MAX_LOGIN_ATTEMPTS, 429 account_locked, as for POST /auth/login.",
        status=204,
        body=ChangePasswordRequest,
        problems=(400, 401, 415, 429),
    )
    async def change_password(self, call: Call) -> Response:
        body: ChangePasswordRequest = call.body
        await self.identity.change_password(
            call.caller.identity, body.current_password, body.new_password
        )
        return Response(status_code=204)

    @operation(
        "POST",
        "/auth/reset-password",
        "Send a password reset token (always 202, known email or not)",
        description=(
            "Answers 202 at once and queues the token afterwards, so neither the answer nor its"
            " timing tells whether the email belongs to a user."
        ),
        status=202,
        auth=False,
        body=ResetRequest,
        problems=(400, 415, 503),
    )
    async def reset_password(self, call: Call) -> Response:
        body: ResetRequest = call.body
        _require_resets(self.password_reset_enabled)
        # After the answer is sent: a known email costs a transaction, an unknown one does not,
        # and an answer that waited for it would tell them apart by its time.
        response = _json({"status": "accepted"}, 202)
        response.background = BackgroundTask(_queue_reset, self.identity, body.email)
        return response

    @operation(
        "POST",
        "/auth/reset-password/confirm",
        "Set a new password with a reset token; every login ends",
        status=204,
        auth=False,
        body=ResetConfirmRequest,
        problems=(400, 415, 503),
    )
    async def reset_password_confirm(self, call: Call) -> Response:
        body: ResetConfirmRequest = call.body
        _require_resets(self.password_reset_enabled)
        await self.identity.confirm_reset(body.token, body.new_password)
        return Response(status_code=204)

    @operation("GET", "/auth/me", "The calling user", response=UserOut, problems=(401,))
    async def me(self, call: Call) -> Response:
        return _json(user_json(await self.identity.get_user(call.caller.identity.user_id)))


def _require_resets(enabled: bool) -> None:
    # PASSWORD_RESET_ENABLED=false: a server without a mail server cannot deliver a token.
    if not enabled:
        raise ServiceUnavailable("password reset is disabled on this server", retry_after=3600)


async def _queue_reset(identity: IdentityService, email: str) -> None:
    try:
        await identity.request_reset(email)
    except Exception:  # the client has its answer; the user can ask again
        log.exception("queueing a password reset failed")
