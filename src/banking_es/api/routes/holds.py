"""Holds: place one on an account, list an account's, read, capture or void one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import orjson
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.hold_schemas import (
    CaptureHoldRequest,
    HoldOut,
    HoldPage,
    HoldQuery,
    PlaceHoldRequest,
    VoidHoldRequest,
)
from banking_es.api.outcomes import guarded, run_command
from banking_es.api.routes.accounts import ACCOUNT_ID, WRITE_PROBLEMS
from banking_es.api.routing import Call, operation
from banking_es.application.accounts import AccountService
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.results import HoldParties, HoldResult
from banking_es.domain import commands as cmd
from banking_es.identity.access import AccountAccess

HOLD_ID = {"hold_id": UUID}


def hold_dict(hold: HoldResult) -> dict[str, Any]:
    body = hold.to_json()
    body["expires_at"] = render.rfc3339(hold.expires_at)
    body["created_at"] = render.rfc3339(hold.created_at)
    return body


def hold_json(hold: HoldResult, warnings: Sequence[str] = ()) -> bytes:
    return orjson.dumps(hold_dict(hold))


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


class HoldRoutes:
    """The hold routes, over the services they use."""

    def __init__(
        self, accounts: AccountService, access: AccountAccess, idempotency: IdempotencyService
    ) -> None:
        self.accounts = accounts
        self.access = access
        self.idempotency = idempotency

    @operation(
        "POST",
        "/accounts/{account_id}/holds",
        "Reserve money on an account until captured, voided or expired",
        description="The amount leaves `available` at once; `to_account_id` names where a"
        " capture sends it (none: the capture only debits). 422 `insufficient_funds` beyond"
        " `available`; 409 `account_closed` / `account_frozen`.",
        status=201,
        params=ACCOUNT_ID,
        body=PlaceHoldRequest,
        response=HoldOut,
        problems=WRITE_PROBLEMS,
    )
    async def place_hold(self, call: Call) -> Response:
        body: PlaceHoldRequest = call.body
        account_id = str(call.params["account_id"])
        identity = call.caller.identity
        command = cmd.PlaceHold(
            account_id, body.amount, body.to_account_id, body.expires_in, body.description
        )
        return await run_command(
            call,
            self.idempotency,
            status=201,
            action=guarded(
                lambda: self.access.check_write(identity, account_id),
                lambda ctx: self.accounts.place_hold(command, ctx),
            ),
            render=hold_json,
            headers=lambda hold: {"Location": f"/holds/{hold.id}"},
        )

    @operation(
        "GET",
        "/accounts/{account_id}/holds",
        "The account's holds, newest first (of one status, if given)",
        params=ACCOUNT_ID,
        query=HoldQuery,
        response=HoldPage,
        problems=(400, 404),
    )
    async def account_holds(self, call: Call) -> Response:
        query: HoldQuery = call.query
        account_id = str(call.params["account_id"])
        # The cursor counts holds from the oldest, so holds placed meanwhile do not shift it.
        before = render.decode_cursor("h", query.cursor)
        await self.access.check_read(call.caller.identity, account_id)
        holds = await self.accounts.account_holds(account_id)
        numbered = [(len(holds) - i, h) for i, h in enumerate(holds)]
        chosen = [
            (n, h)
            for n, h in numbered
            if (before is None or n < before) and (query.status in (None, h.status))
        ]
        page, has_more = chosen[: query.limit], len(chosen) > query.limit
        next_cursor = render.encode_cursor("h", page[-1][0]) if has_more else None
        return _json(render.page([hold_dict(h) for _, h in page], has_more, next_cursor))

    @operation(
        "GET",
        "/holds/{hold_id}",
        "Get a hold (owners of either account, auditors, admins)",
        params=HOLD_ID,
        response=HoldOut,
        problems=(400, 404),
    )
    async def get_hold(self, call: Call) -> Response:
        hold = await self.accounts.get_hold(str(call.params["hold_id"]))
        await self.access.check_hold_visible(call.caller.identity, hold)
        return _json(hold_json(hold))

    async def _settle(self, call: Call, command: Any, void: bool) -> Response:
        identity = call.caller.identity

        async def authorize(hold: HoldParties) -> None:  # on the placement the command reads
            await self.access.check_hold_settle(identity, hold, void=void)

        execute = self.accounts.void_hold if void else self.accounts.capture_hold
        return await run_command(
            call,
            self.idempotency,
            status=200,
            action=lambda ctx: execute(command, ctx, authorize),
            render=hold_json,
        )

    @operation(
        "POST",
        "/holds/{hold_id}/capture",
        "Capture a pending hold (all of it by default); the rest is released",
        description="The source account's owner, the destination's owner or an admin."
        " 422 `amount_exceeds_hold`; 409 `hold_not_pending`.",
        params=HOLD_ID,
        body=CaptureHoldRequest,
        body_required=False,
        response=HoldOut,
        problems=WRITE_PROBLEMS,
    )
    async def capture_hold(self, call: Call) -> Response:
        if call.body is None:  # no body: capture all (the same key fingerprint as `{}`)
            call.body = CaptureHoldRequest()
        body: CaptureHoldRequest = call.body
        command = cmd.CaptureHold(str(call.params["hold_id"]), body.amount)
        return await self._settle(call, command, void=False)

    @operation(
        "POST",
        "/holds/{hold_id}/void",
        "Void a pending hold: its amount is available again",
        description="The source account's owner or an admin. 409 `hold_not_pending`.",
        params=HOLD_ID,
        body=VoidHoldRequest,
        body_required=False,
        response=HoldOut,
        problems=WRITE_PROBLEMS,
    )
    async def void_hold(self, call: Call) -> Response:
        if call.body is None:
            call.body = VoidHoldRequest()
        return await self._settle(call, cmd.VoidHold(str(call.params["hold_id"])), void=True)
