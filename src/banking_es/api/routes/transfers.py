"""/transfers: move money between two accounts atomically; read a transfer."""

from __future__ import annotations

from uuid import UUID

from starlette.responses import Response

from banking_es.api import render
from banking_es.api.outcomes import guarded, run_command
from banking_es.api.routes.accounts import WRITE_PROBLEMS
from banking_es.api.routing import Call, operation
from banking_es.api.schemas import TransferOut, TransferRequest
from banking_es.api.validation import RequestRules
from banking_es.application.accounts import AccountService
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.validation import TRANSFER
from banking_es.domain import commands as cmd
from banking_es.identity.access import AccountAccess


class TransferRoutes:
    """The transfer routes, over the services they use."""

    def __init__(
        self,
        accounts: AccountService,
        access: AccountAccess,
        rules: RequestRules,
        idempotency: IdempotencyService,
    ) -> None:
        self.accounts = accounts
        self.access = access
        self.rules = rules
        self.idempotency = idempotency

    @operation(
        "POST",
        "/transfers",
        "Transfer money between two accounts of the same currency",
        status=201,
        body=TransferRequest,
        response=TransferOut,
        problems=WRITE_PROBLEMS,
    )
    async def create_transfer(self, call: Call) -> Response:
        body: TransferRequest = call.body
        caller = call.caller
        source, target = body.from_account_id, body.to_account_id  # canonical (schemas.Uuid)
        command = cmd.Transfer(source, target, body.amount, body.description)
        data = {
            "from_account_id": command.from_account_id,
            "to_account_id": command.to_account_id,
            "amount": command.amount,
        }
        warnings = await self.rules.check(caller, TRANSFER, data)
        return await run_command(
            call,
            self.idempotency,
            status=201,
            action=guarded(
                lambda: self.access.check_write(caller.identity, source),
                lambda ctx: self.accounts.transfer(command, ctx),
            ),
            render=render.transfer_json,
            warnings=warnings,
            headers=lambda t: {"Location": f"/transfers/{t.id}"},
        )

    @operation(
        "GET",
        "/transfers/{transfer_id}",
        "Get a transfer",
        params={"transfer_id": UUID},
        response=TransferOut,
        problems=(400, 404),
    )
    async def get_transfer(self, call: Call) -> Response:
        transfer = await self.accounts.get_transfer(str(call.params["transfer_id"]))
        await self.access.check_transfer_visible(call.caller.identity, transfer)
        return Response(render.transfer_json(transfer), media_type="application/json")
