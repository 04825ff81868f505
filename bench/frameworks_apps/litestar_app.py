"""Litestar with msgspec models: a guard checks the bearer, a dependency the repeated keys."""

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Litestar, Request, get, post
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException, ValidationException
from litestar.handlers.base import BaseRouteHandler

from bench.frameworks_apps.common import (
    AMOUNT_PATTERN,
    AUTHORIZATION,
    account,
    amount_of,
    has_repeated_key,
)


class Deposit(msgspec.Struct, forbid_unknown_fields=True):
    amount: Annotated[str, msgspec.Meta(pattern=AMOUNT_PATTERN)]
    description: Annotated[str, msgspec.Meta(max_length=200)]


class Account(msgspec.Struct):
    id: str
    owner_name: str
    balance: str
    currency: str
    status: str
    version: int


# async: Litestar runs a sync guard in a worker thread, a thread hop per request.
async def bearer(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.headers.get("authorization") != AUTHORIZATION:
        raise NotAuthorizedException("a bearer token is required")


async def single_keys(request: Request[Any, Any, Any]) -> bool:
    if has_repeated_key(await request.body()):
        raise ValidationException("a key is repeated")
    return True


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@post(
    "/accounts/{account_id:uuid}/deposit",
    guards=[bearer],
    dependencies={"checked": Provide(single_keys)},
    status_code=200,
)
async def deposit(account_id: UUID, data: Deposit, checked: bool) -> Account:
    amount = amount_of(data.amount)
    if amount is None:
        raise ValidationException("amount must be positive")
    return Account(**account(str(account_id), amount))


app = Litestar([live, deposit])
