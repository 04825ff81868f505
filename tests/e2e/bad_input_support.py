"""The write endpoints and the `World` of the bad-input tests (the `world` fixture is in
conftest.py): two open accounts, an empty one to close, and the API.

Bodies are sent as raw JSON text, so that numbers such as `1e3`, `NaN` or
`999999999999999.99` reach the server exactly as a client could write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import StoreState, assert_problem, open_account, snapshot_store

from banking_es.bootstrap import Services

JSON = {"content-type": "application/json"}
UNKNOWN_ID = "6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01"


@dataclass(frozen=True)
class Endpoint:
    """A write endpoint and a valid body for it, with `%s` where the amount goes."""

    name: str
    path: str
    template: str
    amount_field: str

    def body(self, amount: str = '"1.00"') -> str:
        return self.template % amount


OPEN = Endpoint(
    "open", "/accounts", '{"owner_name": "Eve", "initial_balance": %s}', "initial_balance"
)
DEPOSIT = Endpoint("deposit", "/accounts/{A}/deposit", '{"amount": %s}', "amount")
WITHDRAW = Endpoint("withdraw", "/accounts/{A}/withdraw", '{"amount": %s}', "amount")
CLOSE = Endpoint("close", "/accounts/{Z}/close", '{"reason": "bye"%s}', "")
TRANSFER = Endpoint(
    "transfer",
    "/transfers",
    '{"from_account_id": "{A}", "to_account_id": "{B}", "amount": %s}',
    "amount",
)
MONEY_ENDPOINTS = [OPEN, DEPOSIT, WITHDRAW, TRANSFER]
WRITE_ENDPOINTS = [OPEN, DEPOSIT, WITHDRAW, CLOSE, TRANSFER]


def _valid_body(endpoint: Endpoint) -> str:
    return endpoint.body("") if endpoint is CLOSE else endpoint.body()


@dataclass
class World:
    """Two open accounts (A with 100.00, B empty), an empty one to close (Z), and the API.

    One world serves the whole module: a rejected request changes nothing, and each test
    compares the store before and after its own request. Tests whose requests succeed
    work on accounts of their own (`fresh`).
    """

    api: httpx.AsyncClient
    services: Services
    ids: dict[str, str]

    async def fresh(self) -> World:
        ids = {
            "A": (await open_account(self.api, "A", "100"))["id"],
            "B": (await open_account(self.api, "B", "0"))["id"],
            "Z": (await open_account(self.api, "Z", "0"))["id"],
        }
        return World(self.api, self.services, ids)

    async def state(self) -> StoreState:
        return await snapshot_store(self.services)

    def fill(self, text: str) -> str:
        for name, value in self.ids.items():
            text = text.replace("{" + name + "}", value)
        return text

    async def post(
        self, path: str, content: bytes | str, headers: dict[str, Any] | None = None
    ) -> httpx.Response:
        if isinstance(content, str):
            content = self.fill(content).encode()
        return await self.api.post(self.fill(path), content=content, headers=headers or JSON)

    async def rejects(
        self,
        path: str,
        content: bytes | str,
        status: int,
        code: str,
        headers: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """POST and assert a `status`/`code` problem and that the store did not change."""
        before = await self.state()
        response = await self.post(path, content, headers)
        body = assert_problem(response, status, code)
        assert await self.state() == before, "a rejected request changed the store"
        return body


def endpoint_params(endpoints: list[Endpoint]) -> list[object]:
    return [pytest.param(e, id=e.name) for e in endpoints]
