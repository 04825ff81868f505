"""/accounts: open, read (now, at a version, as of a time), deposit, withdraw, close, history."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from msgspec import Meta, Struct
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.outcomes import guarded, run_command
from banking_es.api.problems import ApiError
from banking_es.api.ranges import VersionQuery
from banking_es.api.routing import Call, operation
from banking_es.api.schemas import (
    AccountOut,
    AccountPage,
    CloseAccountRequest,
    CreateAccountRequest,
    EventPage,
    MoneyRequest,
    TransactionPage,
)
from banking_es.api.validation import RequestRules
from banking_es.application.accounts import AccountService, CommandContext, Replayed
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.ports import Clock
from banking_es.application.validation import ACCOUNT_CREATION, TRANSACTION
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.domain.money import format_in
from banking_es.identity.access import AccountAccess
from banking_es.projections.queries import ReadModels

#: The problems every write may answer (besides 401, 403 and 429).
WRITE_PROBLEMS = (400, 404, 409, 413, 415, 422, 503)
ACCOUNT_ID = {"account_id": UUID}
Limit = Annotated[int, Meta(ge=1, le=100, description="Page size, 1-100")]
Cursor = Annotated[str, Meta(max_length=200, description="Opaque cursor from next_cursor")]
AsOf = Annotated[str, Meta(max_length=64, description="RFC 3339 time, e.g. 2026-01-31T12:00:00Z")]


class PageQuery(Struct, frozen=True):
    limit: Limit = 20
    cursor: Cursor | None = None


class AccountQuery(Struct, frozen=True):
    as_of: AsOf | None = None
    version: VersionQuery | None = None


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


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


class AccountRoutes:
    """The account routes, over the services they use."""

    def __init__(
        self,
        accounts: AccountService,
        access: AccountAccess,
        read_models: ReadModels,
        rules: RequestRules,
        idempotency: IdempotencyService,
        default_currency: str,
        clock: Clock,
    ) -> None:
        self.accounts = accounts
        self.access = access
        self.read_models = read_models
        self.rules = rules
        self.idempotency = idempotency
        self.default_currency = default_currency
        self.clock = clock

    def _account(self, account: Account, warnings: Sequence[str] = ()) -> bytes:
        """The account JSON, `available` as of now (holds past their expiry no longer count)."""
        return render.account_json(account, warnings, self.clock.now())

    async def _write(
        self,
        call: Call,
        execute: Callable[[CommandContext], Awaitable[Account | Replayed]],
        warnings: Sequence[str] = (),
    ) -> Response:
        """A write to an existing account: owner check, Idempotency-Key, 200 with the account."""
        account_id = str(call.params["account_id"])
        caller = call.caller
        return await run_command(
            call,
            self.idempotency,
            status=200,
            action=guarded(lambda: self.access.check_write(caller.identity, account_id), execute),
            render=self._account,
            warnings=warnings,
        )

    @operation(
        "POST",
        "/accounts",
        "Open an account",
        status=201,
        body=CreateAccountRequest,
        response=AccountOut,
        problems=(400, 409, 413, 415, 422, 503),
    )
    async def open_account(self, call: Call) -> Response:
        body: CreateAccountRequest = call.body
        caller = call.caller
        self.access.check_create(caller.identity)
        command = cmd.OpenAccount(
            body.owner_name,
            body.initial_balance,
            body.currency or self.default_currency,
            caller.user_id,
        )
        warnings = await self.rules.check(
            caller,
            ACCOUNT_CREATION,
            {"owner_name": command.owner_name, "initial_balance": command.initial_balance},
        )
        return await run_command(
            call,
            self.idempotency,
            status=201,
            action=lambda ctx: self.accounts.open_account(command, ctx),
            render=self._account,
            warnings=warnings,
            headers=lambda account: {"Location": f"/accounts/{account.id}"},
        )

    @operation(
        "GET",
        "/accounts",
        "List accounts (oldest first; the list is read from a read model, which may lag a moment)",
        query=PageQuery,
        response=AccountPage,
        problems=(400,),
    )
    async def list_accounts(self, call: Call) -> Response:
        query: PageQuery = call.query
        after = render.decode_cursor("a", query.cursor)
        owner = self.access.list_owner(call.caller.identity)
        rows, has_more = await self.read_models.list_accounts(owner, after, query.limit)
        # The read model picks and orders the page; each row is the account object itself.
        accounts = await self.accounts.listed_accounts([r.account_id for r in rows])
        now = self.clock.now()
        data = [render.account_dict(account, now) for account in accounts]
        next_cursor = render.encode_cursor("a", rows[-1].created_position) if has_more else None
        return _json(render.page(data, has_more, next_cursor))

    @operation(
        "GET",
        "/accounts/{account_id}",
        "Get an account, now or at a moment or version",
        params=ACCOUNT_ID,
        query=AccountQuery,
        response=AccountOut,
        problems=(400, 404),
    )
    async def get_account(self, call: Call) -> Response:
        query: AccountQuery = call.query
        account_id = str(call.params["account_id"])
        identity = call.caller.identity
        if query.as_of is not None and query.version is not None:
            raise ApiError(
                400,
                "validation_error",
                "give either as_of or version, not both",
                errors=[{"field": "as_of", "message": "cannot be combined with version"}],
            )
        moment = _rfc3339(query.as_of) if query.as_of is not None else None
        if moment is None and query.version is None:
            # The current state: loaded first (a missing account is the same 404), then the
            # owner checked on it, which saves the access check its own lookup.
            account = await self.accounts.get_account(account_id)
            self.access.check_read_of(identity, account)
            return _json(self._account(account))
        await self.access.check_read(identity, account_id)
        if moment is not None:
            account = await self.accounts.account_as_of(account_id, moment)
        else:
            assert query.version is not None
            account = await self.accounts.account_at_version(account_id, query.version)
            moment = account.updated_at
        # `available` as it was then: the holds live at that moment, not now.
        return _json(render.account_json(account, now=moment))

    async def _transaction(self, call: Call, operation: str) -> Response:
        body: MoneyRequest = call.body
        account_id = str(call.params["account_id"])
        command: Any
        execute: Any
        if operation == "deposit":
            command = cmd.Deposit(account_id, body.amount, body.description, body.expected_version)
            execute = self.accounts.deposit
        else:
            command = cmd.Withdraw(account_id, body.amount, body.description, body.expected_version)
            execute = self.accounts.withdraw
        data = {"operation": operation, "account_id": account_id, "amount": command.amount}
        warnings = await self.rules.check(call.caller, TRANSACTION, data)
        return await self._write(call, lambda ctx: execute(command, ctx), warnings)

    @operation(
        "POST",
        "/accounts/{account_id}/deposit",
        "Deposit money",
        params=ACCOUNT_ID,
        body=MoneyRequest,
        response=AccountOut,
        problems=WRITE_PROBLEMS,
    )
    async def deposit(self, call: Call) -> Response:
        return await self._transaction(call, "deposit")

    @operation(
        "POST",
        "/accounts/{account_id}/withdraw",
        "Withdraw money",
        params=ACCOUNT_ID,
        body=MoneyRequest,
        response=AccountOut,
        problems=WRITE_PROBLEMS,
    )
    async def withdraw(self, call: Call) -> Response:
        return await self._transaction(call, "withdraw")

    @operation(
        "POST",
        "/accounts/{account_id}/close",
        "Close an account (its balance must be zero)",
        params=ACCOUNT_ID,
        body=CloseAccountRequest,
        response=AccountOut,
        problems=WRITE_PROBLEMS,
    )
    async def close_account(self, call: Call) -> Response:
        body: CloseAccountRequest = call.body
        command = cmd.CloseAccount(
            str(call.params["account_id"]), body.reason or "", body.expected_version
        )
        return await self._write(call, lambda ctx: self.accounts.close_account(command, ctx))

    @operation(
        "GET",
        "/accounts/{account_id}/events",
        "The account's audit log, from the event store (oldest first)",
        params=ACCOUNT_ID,
        query=PageQuery,
        response=EventPage,
        problems=(400, 404),
    )
    async def account_events(self, call: Call) -> Response:
        query: PageQuery = call.query
        account_id = str(call.params["account_id"])
        identity = call.caller.identity
        await self.access.check_read(identity, account_id)
        after = render.decode_cursor("v", query.cursor) or 0
        events = await self.accounts.account_events(account_id, after, query.limit + 1)
        has_more = len(events) > query.limit
        events = events[: query.limit]
        next_cursor = render.encode_cursor("v", events[-1].version) if has_more else None
        return _json(
            render.page(
                [render.event_dict(e, customer=not identity.reads_all) for e in events],
                has_more,
                next_cursor,
            )
        )

    @operation(
        "GET",
        "/accounts/{account_id}/transactions",
        "Money movements, newest first (read model, may lag a moment)",
        params=ACCOUNT_ID,
        query=PageQuery,
        response=TransactionPage,
        problems=(400, 404),
    )
    async def account_transactions(self, call: Call) -> Response:
        query: PageQuery = call.query
        account_id = str(call.params["account_id"])
        before = render.decode_cursor("t", query.cursor)
        await self.access.check_read(call.caller.identity, account_id)
        account = await self.accounts.get_account(account_id)  # 404 for unknown ones
        rows, has_more = await self.read_models.list_transactions(account_id, before, query.limit)
        data = []
        for r in rows:
            row = {
                "id": r.id,
                "type": r.type,
                "amount": format_in(r.amount, account.currency),
                "balance_after": format_in(r.balance_after, account.currency),
                "description": r.description,
                "version": r.version,
                "transfer_id": r.transfer_id,
                "occurred_at": render.rfc3339(r.occurred_at),
            }
            if r.status is not None:  # hold rows only: the others keep their shape
                row["status"] = r.status
            data.append(row)
        next_cursor = render.encode_cursor("t", rows[-1].version) if has_more else None
        return _json(render.page(data, has_more, next_cursor))
