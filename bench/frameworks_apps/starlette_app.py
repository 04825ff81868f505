"""Starlette routing; the handler checks the bearer, decodes a msgspec model and encodes one."""

from typing import Annotated
from uuid import UUID

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Deposit)  # strict: a JSON number is not a string


def _json(value: object, status: int = 200) -> Response:
    return Response(_ENCODER.encode(value), status, media_type="application/json")


async def live(request: Request) -> Response:
    return _json({"status": "ok"})


async def deposit(request: Request) -> Response:
    if request.headers.get("authorization") != AUTHORIZATION:
        return _json({"detail": "a bearer token is required"}, 401)
    account_id: UUID = request.path_params["account_id"]
    body = await request.body()
    if has_repeated_key(body):
        return _json({"detail": "a key is repeated"}, 400)
    try:
        data = _DECODER.decode(body)
    except msgspec.ValidationError as error:
        return _json({"detail": str(error)}, 422)
    except msgspec.DecodeError as error:
        return _json({"detail": str(error)}, 400)
    amount = amount_of(data.amount)
    if amount is None:
        return _json({"detail": "amount must be positive"}, 422)
    return _json(Account(**account(str(account_id), amount)))


app = Starlette(
    routes=[
        Route("/health/live", live),
        Route("/accounts/{account_id:uuid}/deposit", deposit, methods=["POST"]),
    ]
)
