"""/accounts: open, read (now, at a version, as of a time), deposit, withdraw, close, history."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.deps import Caller, CallerDep, JSONRoute, ServicesDep
from banking_es.api.outcomes import guarded, run_command
from banking_es.api.problems import ApiError
from banking_es.api.ranges import VersionQuery
from banking_es.api.ratelimit import RATE_LIMIT_RESPONSES, RATE_LIMITED
from banking_es.api.schemas import (
    AccountOut,
    AccountPage,
    CloseAccountRequest,
    CreateAccountRequest,
    EventPage,
    MoneyRequest,
    Problem,
    TransactionPage,
)
from banking_es.api.validation import validate_request
from banking_es.application.accounts import CommandContext, Replayed
from banking_es.application.validation import ACCOUNT_CREATION, TRANSACTION
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.domain.money import format_in

if TYPE_CHECKING:
    from banking_es.bootstrap import Services

router = APIRouter(
    prefix="/accounts",
    tags=["accounts"],
    route_class=JSONRoute,
    dependencies=RATE_LIMITED,
    responses=RATE_LIMIT_RESPONSES,
)

AccountId = Annotated[UUID, "account id"]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1-100")]
Cursor = Annotated[str | None, Query(max_length=200, description="Opaque cursor from next_cursor")]


def _problems(*codes: int) -> dict[int | str, dict[str, object]]:
    return {code: {"model": Problem, "content": {"application/problem+json": {}}} for code in codes}


async def _check_transaction(
    services: Services, caller: Caller, operation: str, command: cmd.Deposit | cmd.Withdraw
) -> list[str]:
    data = {"operation": operation, "account_id": command.account_id, "amount": command.amount}
    return await validate_request(services, caller, TRANSACTION, data)


async def _write(
    request: Request,
    services: Services,
    caller: Caller,
    body: BaseModel,
    account_id: UUID,
    execute: Callable[[CommandContext], Awaitable[Account | Replayed]],
    warnings: Sequence[str] = (),
) -> Response:
    """A write to an existing account: owner check, Idempotency-Key, 200 with the account."""
    return await run_command(
        request,
        caller,
        services.idempotency,
        body,
        status=200,
        action=guarded(
            lambda: services.access.check_write(caller.identity, str(account_id)), execute
        ),
        render=render.account_json,
        warnings=warnings,
    )


def _location(account: Account) -> dict[str, str]:
    return {"Location": f"/accounts/{account.id}"}


@router.post(
    "",
    status_code=201,
    summary="Open an account",
    response_model=AccountOut,
    responses=_problems(400, 409, 413, 415, 422, 503),
)
async def open_account(
    body: CreateAccountRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Response:
    services.access.check_create(caller.identity)
    command = cmd.OpenAccount(
        body.owner_name,
        body.initial_balance,
        body.currency or services.settings.default_currency,
        caller.user_id,
    )
    warnings = await validate_request(
        services,
        caller,
        ACCOUNT_CREATION,
        {"owner_name": command.owner_name, "initial_balance": command.initial_balance},
    )
    return await run_command(
        request,
        caller,
        services.idempotency,
        body,
        status=201,
        action=lambda ctx: services.accounts.open_account(command, ctx),
        render=render.account_json,
        warnings=warnings,
        headers=_location,
    )


@router.get(
    "",
    summary="List accounts (oldest first; read model, may lag a moment)",
    response_model=AccountPage,
    responses=_problems(400),
)
async def list_accounts(
    services: ServicesDep, caller: CallerDep, limit: Limit = 20, cursor: Cursor = None
) -> Response:
    after = render.decode_cursor("a", cursor)
    owner = services.access.list_owner(caller.identity)
    rows, has_more = await services.read_models.list_accounts(owner, after, limit)
    data = [
        {
            "id": r.account_id,
            "owner_name": r.owner_name,
            "balance": format_in(r.balance, r.currency),
            "currency": r.currency,
            "status": r.status,
            "version": r.version,
            "created_at": render._time(r.created_at),
            "updated_at": render._time(r.updated_at),
        }
        for r in rows
    ]
    next_cursor = render.encode_cursor("a", rows[-1].created_position) if has_more else None
    return Response(render.page(data, has_more, next_cursor), media_type="application/json")


_RFC3339 = re.compile(  # ASCII digits, the whole string (`fullmatch`)
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time with its offset, as UTC; 400 for anything else."""

    def refuse(message: str) -> ApiError:
        return ApiError(
            400,
            "validation_error",
            f"as_of {message}",
            errors=[{"field": "as_of", "message": message}],
        )

    if not _RFC3339.fullmatch(text):
        raise refuse("must be an RFC 3339 time with an offset, e.g. 2026-01-31T12:00:00Z")
    digits = re.sub(r"\.([0-9]{6})[0-9]+", r".\1", text)  # Python keeps microseconds
    try:
        return datetime.fromisoformat(digits.replace("z", "Z")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise refuse("is not a valid time") from None


@router.get(
    "/{account_id}",
    summary="Get an account, now or at a moment or version",
    response_model=AccountOut,
    responses=_problems(400, 404),
)
async def get_account(
    account_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    as_of: Annotated[
        str | None,
        Query(max_length=64, description="RFC 3339 time, e.g. 2026-01-31T12:00:00Z"),
    ] = None,
    version: VersionQuery = None,
) -> Response:
    if as_of is not None and version is not None:
        raise ApiError(
            400,
            "validation_error",
            "give either as_of or version, not both",
            errors=[{"field": "as_of", "message": "cannot be combined with version"}],
        )
    moment = _rfc3339(as_of) if as_of is not None else None
    accounts = services.accounts
    if moment is None and version is None:
        # The current state: loaded first (a missing account is the same 404), then the
        # owner checked on it, which saves the access check its own lookup.
        account = await accounts.get_account(str(account_id))
        services.access.check_read_of(caller.identity, account)
        return Response(render.account_json(account), media_type="application/json")
    await services.access.check_read(caller.identity, str(account_id))
    if moment is not None:
        account = await accounts.account_as_of(str(account_id), moment)
    else:
        assert version is not None
        account = await accounts.account_at_version(str(account_id), version)
    return Response(render.account_json(account), media_type="application/json")


@router.post(
    "/{account_id}/deposit",
    summary="Deposit money",
    response_model=AccountOut,
    responses=_problems(400, 404, 409, 413, 415, 422, 503),
)
async def deposit(
    account_id: UUID,
    body: MoneyRequest,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
) -> Response:
    command = cmd.Deposit(str(account_id), body.amount, body.description, body.expected_version)
    warnings = await _check_transaction(services, caller, "deposit", command)
    return await _write(
        request,
        services,
        caller,
        body,
        account_id,
        lambda ctx: services.accounts.deposit(command, ctx),
        warnings,
    )


@router.post(
    "/{account_id}/withdraw",
    summary="Withdraw money",
    response_model=AccountOut,
    responses=_problems(400, 404, 409, 413, 415, 422, 503),
)
async def withdraw(
    account_id: UUID,
    body: MoneyRequest,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
) -> Response:
    command = cmd.Withdraw(str(account_id), body.amount, body.description, body.expected_version)
    warnings = await _check_transaction(services, caller, "withdraw", command)
    return await _write(
        request,
        services,
        caller,
        body,
        account_id,
        lambda ctx: services.accounts.withdraw(command, ctx),
        warnings,
    )


@router.post(
    "/{account_id}/close",
    summary="Close an account (its balance must be zero)",
    response_model=AccountOut,
    responses=_problems(400, 404, 409, 413, 415, 422, 503),
)
async def close_account(
    account_id: UUID,
    body: CloseAccountRequest,
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
) -> Response:
    command = cmd.CloseAccount(str(account_id), body.reason or "", body.expected_version)
    return await _write(
        request,
        services,
        caller,
        body,
        account_id,
        lambda ctx: services.accounts.close_account(command, ctx),
    )


@router.get(
    "/{account_id}/events",
    summary="The account's audit log, from the event store (oldest first)",
    response_model=EventPage,
    responses=_problems(400, 404),
)
async def account_events(
    account_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    await services.access.check_read(caller.identity, str(account_id))
    after = render.decode_cursor("v", cursor) or 0
    events = await services.accounts.account_events(str(account_id), after, limit + 1)
    has_more = len(events) > limit
    events = events[:limit]
    next_cursor = render.encode_cursor("v", events[-1].version) if has_more else None
    return Response(
        render.page([render.event_dict(e) for e in events], has_more, next_cursor),
        media_type="application/json",
    )


@router.get(
    "/{account_id}/transactions",
    summary="Money movements, newest first (read model, may lag a moment)",
    response_model=TransactionPage,
    responses=_problems(400, 404),
)
async def account_transactions(
    account_id: UUID,
    services: ServicesDep,
    caller: CallerDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    before = render.decode_cursor("t", cursor)
    await services.access.check_read(caller.identity, str(account_id))
    account = await services.accounts.get_account(str(account_id))  # 404 for unknown ones
    rows, has_more = await services.read_models.list_transactions(str(account_id), before, limit)
    data = [
        {
            "id": r.id,
            "type": r.type,
            "amount": format_in(r.amount, account.currency),
            "balance_after": format_in(r.balance_after, account.currency),
            "description": r.description,
            "version": r.version,
            "transfer_id": r.transfer_id,
            "occurred_at": render._time(r.occurred_at),
        }
        for r in rows
    ]
    next_cursor = render.encode_cursor("t", rows[-1].version) if has_more else None
    return Response(render.page(data, has_more, next_cursor), media_type="application/json")
