"""GET /accounts/{id}/statement (API.md): a period's movements as JSON, CSV or PDF by `Accept`.

Read like the other account reads (owner, auditor, admin); the PDF is made off the event loop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from msgspec import Meta, Struct, defstruct, field
from starlette.responses import Response

from banking_es.api.problems import ApiError
from banking_es.api.routing import Call, operation
from banking_es.application.accounts import AccountService
from banking_es.application.ports import Clock
from banking_es.application.statements import parse_period
from banking_es.identity.access import AccountAccess
from banking_es.statements.documents import (
    CONTENT_TYPES,
    negotiate,
    statement_csv,
    statement_dict,
)
from banking_es.statements.pdf import statement_pdf

Day = Annotated[str, Meta(max_length=10, description="A UTC day, YYYY-MM-DD (inclusive)")]
# `from` is a Python keyword: the model is made by name. Both optional here, so that a
# missing day is listed with the other problems by `parse_period`.
StatementQuery: Any = defstruct(
    "StatementQuery", [("from", Day | None, None), ("to", Day | None, None)], frozen=True
)
Money = Annotated[str, Meta(examples=["-12.50"])]
_ANSWER = "The statement: JSON; `Accept: text/csv` the lines as CSV; `application/pdf` a PDF"
_DOCUMENTS: dict[str, Any] = {
    "text/csv": {"schema": {"type": "string"}},
    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
}


class StatementLineOut(Struct):
    occurred_at: datetime
    type: str
    description: str | None
    amount: Money
    balance_after: Money
    reference: str | None


class StatementOut(Struct):
    account_id: str
    currency: str
    to: str
    opening_balance: Money
    closing_balance: Money
    total_in: Money
    total_out: Money
    lines: list[StatementLineOut]
    from_: str = field(name="from")


class StatementRoutes:
    """The statement route, over the account service, access and the bank's name."""

    def __init__(
        self, accounts: AccountService, access: AccountAccess, clock: Clock, bank_name: str
    ) -> None:
        self.accounts = accounts
        self.access = access
        self.clock = clock
        self.bank_name = bank_name

    @operation(
        "GET",
        "/accounts/{account_id}/statement",
        "A statement of a period: JSON, or CSV or PDF by Accept (406 for anything else)",
        params={"account_id": UUID},
        query=StatementQuery,
        problems=(400, 404, 406),
        responses={200: {"description": _ANSWER, "model": StatementOut, "content": _DOCUMENTS}},
    )
    async def account_statement(self, call: Call) -> Response:
        query = call.query
        account_id = str(call.params["account_id"])
        await self.access.check_read(call.caller.identity, account_id)
        period = parse_period(getattr(query, "from"), query.to)
        wanted = negotiate(call.header(b"accept"))
        if wanted is None:
            raise ApiError(
                406,
                "not_acceptable",
                "this statement is served as application/json, text/csv or application/pdf",
                headers={"Vary": "Accept"},
            )
        statement = await self.accounts.statement(account_id, period)
        if wanted == "csv":
            body = statement_csv(statement)
        elif wanted == "pdf":
            body = await asyncio.to_thread(
                statement_pdf, statement, bank_name=self.bank_name, generated_at=self.clock.now()
            )
        else:
            body = orjson.dumps(statement_dict(statement))
        headers = {"Vary": "Accept"}
        return Response(body, media_type=CONTENT_TYPES[wanted], headers=headers)
