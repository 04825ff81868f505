"""/auth: register, log in, refresh, log out, passwords, who am I (API.md, "Identity")."""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter
from starlette.background import BackgroundTask
from starlette.responses import Response

from banking_es.api.deps import CallerDep, JSONRoute, ServicesDep
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
from banking_es.api.routes.accounts import _problems
from banking_es.application.errors import ServiceUnavailable
from banking_es.identity.service import IdentityService
from banking_es.identity.tokens import TokenPair
from banking_es.identity.users import User

router = APIRouter(prefix="/auth", tags=["auth"], route_class=JSONRoute)
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


@router.post(
    "/register",
    status_code=201,
    summary="Create a customer user",
    response_model=UserOut,
    responses=_problems(400, 409, 415),
)
async def register(body: RegisterRequest, services: ServicesDep) -> Response:
    user = await services.identity.register(body.username, body.email, body.password)
    return _json(user_json(user), 201)


@router.post(
    "/login",
    summary="Log in with username (or email) and password",
    response_model=TokenPairOut,
    responses=_problems(400, 401, 415, 429),
)
async def login(body: LoginRequest, services: ServicesDep) -> Response:
    return _pair(await services.identity.login(body.username, body.password))


@router.post(
    "/refresh",
    summary="Trade a refresh token for a new pair (the old one dies)",
    response_model=TokenPairOut,
    responses=_problems(400, 401, 415),
)
async def refresh(body: RefreshRequest, services: ServicesDep) -> Response:
    return _pair(await services.identity.refresh(body.refresh_token))


@router.post(
    "/logout",
    status_code=204,
    summary="End this login: its tokens are rejected from now on, by every process",
    responses=_problems(400, 401, 415),
)
async def logout(
    services: ServicesDep, caller: CallerDep, body: LogoutRequest | None = None
) -> Response:
    await services.identity.logout(caller.identity, body.refresh_token if body else None)
    return Response(status_code=204)


@router.post(
    "/change-password",
    status_code=204,
    summary="Change the password; every other login of the user ends",
    description="A wrong current password counts as a failed login of both of the user's "
    "names: after MAX_LOGIN_ATTEMPTS, 429 account_locked, as for POST /auth/login.",
    responses=_problems(400, 401, 415, 429),
)
async def change_password(
    body: ChangePasswordRequest, services: ServicesDep, caller: CallerDep
) -> Response:
    await services.identity.change_password(
        caller.identity, body.current_password, body.new_password
    )
    return Response(status_code=204)


@router.post(
    "/reset-password",
    status_code=202,
    summary="Send a password reset token (always 202, known email or not)",
    description=(
        "Answers 202 at once and queues the token afterwards, so neither the answer nor its"
        " timing tells whether the email belongs to a user."
    ),
    responses=_problems(400, 415, 503),
)
async def reset_password(body: ResetRequest, services: ServicesDep) -> Response:
    _require_resets(services.settings.password_reset_enabled)
    # After the answer is sent: a known email costs a transaction, an unknown one does not,
    # and an answer that waited for it would tell them apart by its time.
    response = _json({"status": "accepted"}, 202)
    response.background = BackgroundTask(_queue_reset, services.identity, body.email)
    return response


def _require_resets(enabled: bool) -> None:
    # PASSWORD_RESET_ENABLED=false: a server without a mail server cannot deliver a token.
    if not enabled:
        raise ServiceUnavailable("password reset is disabled on this server", retry_after=3600)


async def _queue_reset(identity: IdentityService, email: str) -> None:
    try:
        await identity.request_reset(email)
    except Exception:  # the client has its answer; the user can ask again
        log.exception("queueing a password reset failed")


@router.post(
    "/reset-password/confirm",
    status_code=204,
    summary="Set a new password with a reset token; every login ends",
    responses=_problems(400, 415, 503),
)
async def reset_password_confirm(body: ResetConfirmRequest, services: ServicesDep) -> Response:
    _require_resets(services.settings.password_reset_enabled)
    await services.identity.confirm_reset(body.token, body.new_password)
    return Response(status_code=204)


@router.get("/me", summary="The calling user", response_model=UserOut, responses=_problems(401))
async def me(services: ServicesDep, caller: CallerDep) -> Response:
    return _json(user_json(await services.identity.get_user(caller.identity.user_id)))
