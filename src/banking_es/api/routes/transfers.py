"""/transfers: move money between two accounts atomically; read a transfer."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.deps import CallerDep, JSONRoute, ServicesDep
from banking_es.api.outcomes import guarded, run_command
from banking_es.api.problems import validation_error
from banking_es.api.ratelimit import RATE_LIMIT_RESPONSES, RATE_LIMITED
from banking_es.api.routes.accounts import _problems
from banking_es.api.schemas import TransferOut, TransferRequest
from banking_es.api.validation import validate_request
from banking_es.application.validation import TRANSFER
from banking_es.domain import commands as cmd

router = APIRouter(
    prefix="/transfers",
    tags=["transfers"],
    route_class=JSONRoute,
    dependencies=RATE_LIMITED,
    responses=RATE_LIMIT_RESPONSES,
)


def _uuid(field: str, value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise validation_error([{"field": field, "message": "must be a UUID"}]) from None


@router.post(
    "",
    status_code=201,
    summary="Transfer money between two accounts of the same currency",
    response_model=TransferOut,
    responses=_problems(400, 404, 409, 413, 415, 422, 503),
)
async def create_transfer(
    body: TransferRequest, request: Request, services: ServicesDep, caller: CallerDep
) -> Response:
    source = _uuid("from_account_id", body.from_account_id)
    target = _uuid("to_account_id", body.to_account_id)
    command = cmd.Transfer(
        source,
        target,
        body.amount,
        body.description,
    )
    data = {
        "from_account_id": command.from_account_id,
        "to_account_id": command.to_account_id,
        "amount": command.amount,
    }
    warnings = await validate_request(services, caller, TRANSFER, data)
    return await run_command(
        request,
        caller,
        services.idempotency,
        body,
        status=201,
        action=guarded(
            lambda: services.access.check_write(caller.identity, source),
            lambda ctx: services.accounts.transfer(command, ctx),
        ),
        render=render.transfer_json,
        warnings=warnings,
        headers=lambda t: {"Location": f"/transfers/{t.id}"},
    )


@router.get(
    "/{transfer_id}",
    summary="Get a transfer",
    response_model=TransferOut,
    responses=_problems(400, 404),
)
async def get_transfer(transfer_id: UUID, services: ServicesDep, caller: CallerDep) -> Response:
    transfer = await services.accounts.get_transfer(str(transfer_id))
    await services.access.check_transfer_visible(caller.identity, transfer)
    return Response(render.transfer_json(transfer), media_type="application/json")
