"""/admin/accounts (API.md): an account's overdraft limit, and freezing and unfreezing it.

Admins only (the class's role). Each answers the account as every account route does; a
change that changes nothing (the same limit, freezing a frozen account) appends no event.
Who made the change is recorded in the event (`set_by`, `by`) from the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

from starlette.responses import Response

from banking_es.api import render
from banking_es.api.outcomes import run_command
from banking_es.api.routing import Call, operation
from banking_es.api.schemas import AccountOut, FreezeRequest, OverdraftRequest
from banking_es.application.accounts import AccountService, CommandContext, Replayed
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.ports import Clock
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account

ACCOUNT_ID = {"account_id": UUID}
PROBLEMS = (400, 401, 403, 404, 409, 413, 415)


class AdminAccountRoutes:
    """The admin's account changes, over the account service."""

    def __init__(
        self, accounts: AccountService, idempotency: IdempotencyService, clock: Clock
    ) -> None:
        self.accounts = accounts
        self.idempotency = idempotency
        self.clock = clock

    def _account(self, account: Account, warnings: Sequence[str] = ()) -> bytes:
        return render.account_json(account, warnings, self.clock.now())

    async def _run(
        self, call: Call, execute: Callable[[CommandContext], Awaitable[Account | Replayed]]
    ) -> Response:
        return await run_command(
            call, self.idempotency, status=200, action=execute, render=self._account
        )

    @operation(
        "PATCH",
        "/admin/accounts/{account_id}",
        "Set an account's overdraft limit (admin; in the account's currency's decimals)",
        params=ACCOUNT_ID,
        body=OverdraftRequest,
        response=AccountOut,
        problems=PROBLEMS,
    )
    async def set_overdraft_limit(self, call: Call) -> Response:
        body: OverdraftRequest = call.body
        command = cmd.SetOverdraftLimit(
            str(call.params["account_id"]), body.overdraft_limit, call.caller.user_id
        )
        return await self._run(call, lambda ctx: self.accounts.set_overdraft_limit(command, ctx))

    @operation(
        "POST",
        "/admin/accounts/{account_id}/freeze",
        "Freeze an account (admin): debits refused, credits accepted; frozen already: no change",
        params=ACCOUNT_ID,
        body=FreezeRequest,
        response=AccountOut,
        problems=PROBLEMS,
    )
    async def freeze_account(self, call: Call) -> Response:
        body: FreezeRequest = call.body
        command = cmd.FreezeAccount(
            str(call.params["account_id"]), body.reason, call.caller.user_id
        )
        return await self._run(call, lambda ctx: self.accounts.freeze_account(command, ctx))

    @operation(
        "POST",
        "/admin/accounts/{account_id}/unfreeze",
        "Unfreeze an account (admin); not frozen: no change",
        params=ACCOUNT_ID,
        response=AccountOut,
        problems=(401, 403, 404, 409),
    )
    async def unfreeze_account(self, call: Call) -> Response:
        command = cmd.UnfreezeAccount(str(call.params["account_id"]), call.caller.user_id)
        return await self._run(call, lambda ctx: self.accounts.unfreeze_account(command, ctx))
