"""/accounts through the HTTP API: open, read, deposit, withdraw, close and the audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import (
    ACCOUNT_KEYS,
    both_backends,
    deposit,
    open_account,
    parse_time,
    wait_for_projections,
    withdraw,
)

from banking_es.bootstrap import Services

# ---- open and read ----------------------------------------------------------------------------


@both_backends
async def test_open_account_answers_201_with_location_and_the_new_account(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/accounts", json={"owner_name": "Ada", "initial_balance": 1500})

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ACCOUNT_KEYS  # no `warnings` when nothing warned
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert response.headers["location"] == f"/accounts/{body['id']}"
    assert body["owner_name"] == "Ada"
    assert body["balance"] == "1500.00"
    assert body["currency"] == "USD"
    assert body["status"] == "open"
    assert body["version"] == 1
    assert parse_time(body["created_at"]) == parse_time(body["updated_at"])
    assert abs(parse_time(body["created_at"]) - datetime.now(UTC)) < timedelta(minutes=1)


async def test_get_account_returns_exactly_what_open_answered(api: httpx.AsyncClient) -> None:
    created = await open_account(api, "Grace Hopper", "500.5")

    response = await api.get(f"/accounts/{created['id']}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == created
    assert created["balance"] == "500.50"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10", "10.00"),
        (10, "10.00"),
        ("10.5", "10.50"),
        (10.25, "10.25"),
        ("0", "0.00"),
        (0, "0.00"),
    ],
)
async def test_open_account_gives_amounts_as_two_decimal_strings(
    api: httpx.AsyncClient, given: Any, stored: str
) -> None:
    created = await open_account(api, balance=given)

    assert created["balance"] == stored


@pytest.mark.parametrize(("given", "stored"), [("eur", "EUR"), ("Gbp", "GBP"), ("JPY", "JPY")])
async def test_open_account_normalises_the_currency_to_upper_case(
    api: httpx.AsyncClient, given: str, stored: str
) -> None:
    created = await open_account(api, currency=given)

    assert created["currency"] == stored
    assert (await api.get(f"/accounts/{created['id']}")).json()["currency"] == stored


async def test_open_account_trims_the_owner_name(api: httpx.AsyncClient) -> None:
    created = await open_account(api, "  Ada Lovelace \t")

    assert created["owner_name"] == "Ada Lovelace"


@pytest.mark.parametrize(
    "name",
    ["Zoë Ångström 李小龙 🚀", "Ω" * 200, "O'Brien-Smith, Jr.", "N\u0303o\u0301 combining", "a"],
)
async def test_owner_names_in_any_script_round_trip_exactly(
    api: httpx.AsyncClient, services: Services, name: str
) -> None:
    created = await open_account(api, name)

    assert created["owner_name"] == name
    assert (await api.get(f"/accounts/{created['id']}")).json()["owner_name"] == name
    events = (await api.get(f"/accounts/{created['id']}/events")).json()["data"]
    assert events[0]["data"]["owner_name"] == name
    await wait_for_projections(services)
    listed = (await api.get("/accounts")).json()["data"]
    assert [a["owner_name"] for a in listed] == [name]


# ---- deposit, withdraw, close -----------------------------------------------------------------


async def test_deposit_answers_the_account_after_the_deposit(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="100")

    response = await api.post(
        f"/accounts/{created['id']}/deposit", json={"amount": "25.5", "description": "salary"}
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == ACCOUNT_KEYS
    assert body["id"] == created["id"]
    assert body["balance"] == "125.50"
    assert body["version"] == 2
    assert body["status"] == "open"
    assert body["created_at"] == created["created_at"]
    assert parse_time(body["updated_at"]) >= parse_time(created["updated_at"])


async def test_withdraw_answers_the_account_after_the_withdrawal(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="100")

    response = await api.post(f"/accounts/{created['id']}/withdraw", json={"amount": 99.99})

    assert response.status_code == 200
    body = response.json()
    assert body["balance"] == "0.01"
    assert body["version"] == 2


async def test_withdraw_may_take_the_whole_balance(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="100")

    body = await withdraw(api, created["id"], "100.00")

    assert body["balance"] == "0.00"


async def test_a_tenth_is_exactly_ten_cents(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="0")
    for _ in range(3):
        await deposit(api, created["id"], 0.1)

    body = (await api.get(f"/accounts/{created['id']}")).json()

    assert body["balance"] == "0.30"
    assert body["version"] == 4


async def test_largest_amount_has_fifteen_integer_digits(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="0")

    # Sent as raw JSON text: a Python float could not even hold this number.
    response = await api.post(
        f"/accounts/{created['id']}/deposit",
        content=b'{"amount": 999999999999999.99}',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["balance"] == "999999999999999.99"


async def test_deposit_with_the_current_expected_version_succeeds(api: httpx.AsyncClient) -> None:
    created = await open_account(api)

    body = await deposit(api, created["id"], 1, expected_version=1)
    body = await withdraw(api, created["id"], 1, expected_version=2)

    assert body["version"] == 3


async def test_close_answers_the_closed_account(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="0")

    response = await api.post(f"/accounts/{created['id']}/close", json={"reason": "moving away"})

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "closed"
    assert body["version"] == 2
    assert body["balance"] == "0.00"
    assert (await api.get(f"/accounts/{created['id']}")).json() == body


async def test_close_after_emptying_the_account_with_expected_version(
    api: httpx.AsyncClient,
) -> None:
    created = await open_account(api, balance="12.34")
    await withdraw(api, created["id"], "12.34")

    response = await api.post(
        f"/accounts/{created['id']}/close", json={"reason": "done", "expected_version": 2}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "closed"


async def test_close_without_a_reason_is_accepted(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="0")

    response = await api.post(f"/accounts/{created['id']}/close", json={})

    assert response.status_code == 200
    assert response.json()["status"] == "closed"


# ---- the audit log ----------------------------------------------------------------------------


@both_backends
async def test_events_are_the_audit_log_oldest_first_with_exact_data(
    api: httpx.AsyncClient,
) -> None:
    created = await open_account(api, "Ada", "10", currency="eur")
    account_id = created["id"]
    await deposit(api, account_id, "5", description="gift")
    await withdraw(api, account_id, 15)
    await api.post(f"/accounts/{account_id}/close", json={"reason": "bye"})

    response = await api.get(f"/accounts/{account_id}/events")

    assert response.status_code == 200
    page = response.json()
    assert page["has_more"] is False
    assert page["next_cursor"] is None
    events = page["data"]
    assert [e["type"] for e in events] == [
        "AccountCreated",
        "MoneyDeposited",
        "MoneyWithdrawn",
        "AccountClosed",
    ]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == 4
    for event in events:
        assert set(event) == {"event_id", "position", "version", "type", "data", "recorded_at"}
        uuid.UUID(event["event_id"])
        parse_time(event["recorded_at"])
    me = (await api.get("/auth/me")).json()
    assert events[0]["data"] == {
        "account_id": account_id,
        "owner_name": "Ada",
        "initial_balance": "10.00",
        "currency": "EUR",
        "owner_id": me["id"],
    }
    assert events[1]["data"] == {"amount": "5.00", "description": "gift"}
    assert events[2]["data"] == {"amount": "15.00", "description": None}
    assert events[3]["data"] == {"reason": "bye"}
    assert events[0]["recorded_at"] == created["created_at"]


async def test_events_are_paged_with_limit_and_cursor(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="0")
    for amount in range(1, 5):
        await deposit(api, created["id"], amount)

    seen: list[int] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get(f"/accounts/{created['id']}/events", params=params)).json()
        pages += 1
        assert len(page["data"]) <= 2
        seen.extend(e["version"] for e in page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert isinstance(page["next_cursor"], str)
        cursor = page["next_cursor"]

    assert seen == [1, 2, 3, 4, 5]
    assert pages == 3


async def test_events_default_page_is_twenty(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="0")
    for _ in range(21):
        await deposit(api, created["id"], 1)

    page = (await api.get(f"/accounts/{created['id']}/events")).json()

    assert len(page["data"]) == 20
    assert page["has_more"] is True
    rest = (
        await api.get(f"/accounts/{created['id']}/events", params={"cursor": page["next_cursor"]})
    ).json()
    assert [e["version"] for e in rest["data"]] == [21, 22]
    assert rest["has_more"] is False


async def test_events_page_of_exactly_limit_has_no_more(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="0")
    await deposit(api, created["id"], 1)

    page = (await api.get(f"/accounts/{created['id']}/events", params={"limit": 2})).json()

    assert len(page["data"]) == 2
    assert page["has_more"] is False
    assert page["next_cursor"] is None
