"""FastAPI with pydantic models, the bearer check and the repeated-key check as dependencies."""

from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from bench.frameworks_apps.common import (
    AMOUNT_PATTERN,
    AUTHORIZATION,
    account,
    amount_of,
    has_repeated_key,
)


class Deposit(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    amount: Annotated[str, Field(pattern=AMOUNT_PATTERN)]
    description: Annotated[str, Field(max_length=200)]


class Account(BaseModel):
    id: str
    owner_name: str
    balance: str
    currency: str
    status: str
    version: int


async def caller(authorization: Annotated[str | None, Header()] = None) -> str:
    if authorization != AUTHORIZATION:
        raise HTTPException(401, "a bearer token is required")
    return "bench-user"


async def single_keys(request: Request) -> None:
    if has_repeated_key(await request.body()):
        raise HTTPException(400, "a key is repeated")


app = FastAPI()


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/accounts/{account_id}/deposit", response_model=Account)
async def deposit(
    account_id: UUID,
    body: Deposit,
    user: Annotated[str, Depends(caller)],
    checked: Annotated[None, Depends(single_keys)],
) -> Account:
    amount = amount_of(body.amount)
    if amount is None:
        raise HTTPException(422, "amount must be positive")
    return Account(**account(str(account_id), amount))
