"""GET /accounts/{id}/statement (API.md): JSON, CSV and PDF by `Accept`, checked against the
account's audit log line by line, on both backends; 406, 400 and access like other reads."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pypdf
import pytest
from tests.e2e.http_support import (
    api_client,
    assert_problem,
    both_backends,
    deposit,
    open_account,
    withdraw,
)

from banking_es.bootstrap import Services

#: Event type -> (statement line type, sign of its amount).
MOVES = {
    "AccountCreated": ("opening", 1, "initial_balance"),
    "MoneyDeposited": ("deposit", 1, "amount"),
    "MoneyWithdrawn": ("withdrawal", -1, "amount"),
    "TransferSent": ("transfer_out", -1, "amount"),
    "TransferReceived": ("transfer_in", 1, "amount"),
}


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


async def _history(api: httpx.AsyncClient) -> tuple[str, str]:
    """An account with every kind of movement (and a freeze, which moves nothing)."""
    account = (await open_account(api, "Ada", "100.00"))["id"]
    other = (await open_account(api, "Bob", "40"))["id"]
    await deposit(api, account, "50.25", description="salary")
    await withdraw(api, account, 20, description="=cash")  # a formula in CSV, defused
    sent = await api.post(
        "/transfers",
        json={"from_account_id": account, "to_account_id": other, "amount": "30.25"},
    )
    assert sent.status_code == 201, sent.text
    received = await api.post(
        "/transfers",
        json={"from_account_id": other, "to_account_id": account, "amount": "5"},
    )
    assert received.status_code == 201, received.text
    return account, sent.json()["id"]


async def _statement(api: httpx.AsyncClient, account: str, **headers: str) -> httpx.Response:
    day = _today()
    return await api.get(
        f"/accounts/{account}/statement", params={"from": day, "to": day}, headers=headers
    )


@both_backends
async def test_a_statement_matches_the_audit_log_line_by_line(api: httpx.AsyncClient) -> None:
    account, transfer_id = await _history(api)
    response = await _statement(api, account)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["vary"] == "Accept"
    statement = response.json()
    events = (await api.get(f"/accounts/{account}/events")).json()["data"]

    balance = Decimal(0)
    expected = []
    for event in events:
        if event["type"] not in MOVES:
            continue
        kind, sign, field = MOVES[event["type"]]
        amount = sign * Decimal(event["data"][field])
        balance += amount
        expected.append(
            {
                "occurred_at": event["recorded_at"],
                "type": kind,
                "description": event["data"].get("description"),
                "amount": f"{amount:.2f}",
                "balance_after": f"{balance:.2f}",
                "reference": event["data"].get("transfer_id"),
            }
        )

    def without_time(line: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in line.items() if k != "occurred_at"}

    assert [without_time(line) for line in statement["lines"]] == [
        without_time(line) for line in expected
    ]
    for line, event_line in zip(statement["lines"], expected, strict=True):
        assert _instant(line["occurred_at"]) == _instant(event_line["occurred_at"])
    assert [line["type"] for line in statement["lines"]] == [
        "opening",
        "deposit",
        "withdrawal",
        "transfer_out",
        "transfer_in",
    ]
    assert statement["lines"][3]["reference"] == transfer_id
    assert {k: v for k, v in statement.items() if k != "lines"} == {
        "account_id": account,
        "currency": "USD",
        "from": _today(),
        "to": _today(),
        "opening_balance": "0.00",
        "closing_balance": "105.00",
        "total_in": "155.25",
        "total_out": "-50.25",
    }
    current = (await api.get(f"/accounts/{account}")).json()
    assert current["balance"] == statement["closing_balance"]


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@both_backends
async def test_csv_has_the_json_lines(api: httpx.AsyncClient) -> None:
    account, _ = await _history(api)
    lines = (await _statement(api, account)).json()["lines"]
    response = await _statement(api, account, accept="text/csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["vary"] == "Accept"
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))
    assert len(rows) == len(lines) == 5
    for row, line in zip(rows, lines, strict=True):
        expected = {k: "" if v is None else v for k, v in line.items()}
        if line["description"] == "=cash":
            expected["description"] = "'=cash"  # a spreadsheet would run it
        assert row == expected


@both_backends
async def test_pdf_opens_and_shows_the_statement(
    api: httpx.AsyncClient, services: Services
) -> None:
    account, _ = await _history(api)
    response = await _statement(api, account, accept="application/pdf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    reader = pypdf.PdfReader(io.BytesIO(response.content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert services.settings.bank_name in text
    assert account in text
    for figure in ("105.00", "155.25", "50.25", "salary"):
        assert figure in text, figure


@both_backends
@pytest.mark.parametrize("accept", ["text/html", "application/xml", "image/*", "text/csv;q=0"])
async def test_an_unservable_accept_is_406(api: httpx.AsyncClient, accept: str) -> None:
    account = (await open_account(api))["id"]
    response = await _statement(api, account, accept=accept)
    assert_problem(response, 406, "not_acceptable")
    assert response.headers["vary"] == "Accept"


@both_backends
@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ({}, ["from", "to"]),
        ({"from": "2026-01-01"}, ["to"]),
        ({"from": "2026-13-01", "to": "2026-01-01"}, ["from"]),
        ({"from": "2026-01-02", "to": "2026-01-01"}, ["to"]),
        ({"from": "2025-01-01", "to": "2026-01-02"}, ["to"]),  # 367 days
        ({"from": "yesterday", "to": "2026-01-01"}, ["from"]),
        ({"from": "2026-1-1", "to": "2026-01-01"}, ["from"]),
        ({"from": "2026-01-01T00:00", "to": "2026-01-01"}, ["from"]),
        ({"from": "٢٠٢٦-01-01", "to": "2026-01-01"}, ["from"]),
    ],
)
async def test_a_bad_period_is_400(
    api: httpx.AsyncClient, query: dict[str, str], fields: list[str]
) -> None:
    account = (await open_account(api))["id"]
    response = await api.get(f"/accounts/{account}/statement", params=query)
    body = assert_problem(response, 400, "validation_error")
    assert sorted({p["field"] for p in body["errors"]}) == fields, body


@both_backends
async def test_a_statement_is_read_like_the_account(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = (await open_account(api, balance="7"))["id"]
    day = {"from": _today(), "to": _today()}
    async with api_client(services) as stranger:
        assert_problem(
            await stranger.get(f"/accounts/{account}/statement", params=day), 404, "not_found"
        )
        unknown = await stranger.get(f"/accounts/{uuid.uuid4()}/statement", params=day)
        assert_problem(unknown, 404, "not_found")
        bad_id = await stranger.get("/accounts/nope/statement", params=day)
        assert_problem(bad_id, 400, "validation_error")
        del stranger.headers["Authorization"]
        anonymous = await stranger.get(f"/accounts/{account}/statement", params=day)
        assert_problem(anonymous, 401, "unauthenticated")
    for role in ("auditor", "admin"):
        async with api_client(services, role=role) as reader:
            seen = await reader.get(f"/accounts/{account}/statement", params=day)
            assert seen.status_code == 200, seen.text
            assert seen.json()["closing_balance"] == "7.00"


@both_backends
async def test_a_period_before_the_account_has_no_lines(api: httpx.AsyncClient) -> None:
    account = (await open_account(api, balance="7", currency="JPY"))["id"]
    past: Any = datetime.now(UTC).date() - timedelta(days=30)
    response = await api.get(
        f"/accounts/{account}/statement",
        params={"from": past.isoformat(), "to": (past + timedelta(days=1)).isoformat()},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["opening_balance"], body["closing_balance"], body["lines"]) == ("0", "0", [])
