"""Currencies through the HTTP API: ISO 4217 codes only, amounts in each one's minor unit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.e2e.http_support import (
    assert_problem,
    both_backends,
    deposit,
    open_account,
    wait_for_projections,
    withdraw,
)

from banking_es.bootstrap import Services


async def _events(api: httpx.AsyncClient, account_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/accounts/{account_id}/events")
    assert response.status_code == 200, response.text
    body = response.json()
    return list(body["data"] if isinstance(body, dict) else body)


@both_backends
@pytest.mark.parametrize(
    ("currency", "opening", "amount", "balance", "after_withdrawal"),
    [
        ("JPY", "150", "1500", "1650", "1649"),
        ("BHD", "1.5", "0.125", "1.625", "0.625"),
        ("KWD", 2, "0.001", "2.001", "1.001"),
        ("USD", "1.5", "0.25", "1.75", "0.75"),
    ],
)
async def test_amounts_are_rendered_with_the_minor_digits_of_the_currency(
    api: httpx.AsyncClient,
    services: Services,
    currency: str,
    opening: Any,
    amount: str,
    balance: str,
    after_withdrawal: str,
) -> None:
    places = {"JPY": 0, "BHD": 3, "KWD": 3, "USD": 2}[currency]

    def shown(value: str) -> str:
        return f"{float(value):.{places}f}"  # test oracle only: these values are exact

    opened = await open_account(api, "Ada", opening, currency=currency)
    assert opened["currency"] == currency
    assert opened["balance"] == shown(str(opening))
    assert (await deposit(api, opened["id"], amount))["balance"] == shown(balance)
    withdrawn = await withdraw(api, opened["id"], "1")
    assert withdrawn["balance"] == shown(after_withdrawal)

    read = (await api.get(f"/accounts/{opened['id']}")).json()
    assert read["balance"] == shown(after_withdrawal)
    data = [event["data"] for event in await _events(api, opened["id"])]
    assert data[0]["initial_balance"] == shown(str(opening))
    assert data[1]["amount"] == shown(amount)
    assert data[2]["amount"] == shown("1")

    await wait_for_projections(services)
    rows = (await api.get(f"/accounts/{opened['id']}/transactions")).json()["data"]
    assert [(r["amount"], r["balance_after"]) for r in rows] == [
        (shown("1"), shown(after_withdrawal)),
        (shown(amount), shown(balance)),
        (shown(str(opening)), shown(str(opening))),
    ]
    listed = (await api.get("/accounts", params={"limit": 100})).json()["data"]
    assert {a["id"]: a["balance"] for a in listed}[opened["id"]] == shown(after_withdrawal)


async def test_jpy_renders_150_and_bhd_renders_1_500(api: httpx.AsyncClient) -> None:
    yen = await open_account(api, "Ada", "150", currency="JPY")
    dinar = await open_account(api, "Ada", "1.5", currency="BHD")
    assert (yen["balance"], dinar["balance"]) == ("150", "1.500")


@pytest.mark.parametrize("currency", ["XXX", "ABC", "XTS", "XAU", "XDR", "CLF", "USN", "BOV"])
async def test_codes_that_are_not_active_currencies_are_refused(
    api: httpx.AsyncClient, currency: str
) -> None:
    response = await api.post(
        "/accounts", json={"owner_name": "Ada", "initial_balance": "1", "currency": currency}
    )
    body = assert_problem(response, 400, "validation_error")
    assert "ISO 4217" in body["error"]


@pytest.mark.parametrize(
    ("currency", "field", "body"),
    [
        ("JPY", "initial_balance", {"initial_balance": "1.50"}),
        ("USD", "initial_balance", {"initial_balance": "1.505"}),
        ("BHD", "initial_balance", {"initial_balance": "1.0005"}),
    ],
)
async def test_an_opening_balance_finer_than_the_currency_is_400(
    api: httpx.AsyncClient, currency: str, field: str, body: dict[str, Any]
) -> None:
    response = await api.post("/accounts", json={"owner_name": "Ada", "currency": currency, **body})
    problem = assert_problem(response, 400, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert field in problem["error"]


@pytest.mark.parametrize(
    ("currency", "amount"), [("JPY", "1.50"), ("JPY", 0.5), ("USD", "0.001"), ("KWD", "0.0001")]
)
async def test_a_transaction_amount_finer_than_the_currency_is_400_and_records_nothing(
    api: httpx.AsyncClient, currency: str, amount: Any
) -> None:
    opened = await open_account(api, "Ada", "100", currency=currency)
    for path in ("deposit", "withdraw"):
        response = await api.post(f"/accounts/{opened['id']}/{path}", json={"amount": amount})
        problem = assert_problem(response, 400, "validation_error")
        assert [e["field"] for e in problem["errors"]] == ["amount"]
    after = (await api.get(f"/accounts/{opened['id']}")).json()
    assert after["version"] == 1


async def test_a_yen_transfer_is_whole_yen(api: httpx.AsyncClient) -> None:
    source = await open_account(api, "Ada", "1000", currency="JPY")
    target = await open_account(api, "Bob", "0", currency="JPY")
    refused = await api.post(
        "/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": "0.5"},
    )
    assert_problem(refused, 400, "validation_error")
    sent = await api.post(
        "/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": 250},
    )
    assert sent.status_code == 201, sent.text
    assert (sent.json()["amount"], sent.json()["currency"]) == ("250", "JPY")
    assert (await api.get(f"/accounts/{target['id']}")).json()["balance"] == "250"
