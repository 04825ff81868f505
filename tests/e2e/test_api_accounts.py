"""/accounts through the HTTP API: open, read, deposit, withdraw, close, history, temporal reads."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import (
    BOTH_BACKENDS,
    assert_problem,
    open_account,
    wait_for_projections,
)

from banking_es.bootstrap import Services

ACCOUNT_KEYS = {
    "id",
    "owner_name",
    "balance",
    "currency",
    "status",
    "version",
    "created_at",
    "updated_at",
}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)


def parse_time(value: str) -> datetime:
    assert RFC3339_UTC.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def deposit(api: httpx.AsyncClient, account_id: str, amount: Any, **extra: Any) -> Any:
    response = await api.post(f"/accounts/{account_id}/deposit", json={"amount": amount, **extra})
    assert response.status_code == 200, response.text
    return response.json()


async def withdraw(api: httpx.AsyncClient, account_id: str, amount: Any, **extra: Any) -> Any:
    response = await api.post(f"/accounts/{account_id}/withdraw", json={"amount": amount, **extra})
    assert response.status_code == 200, response.text
    return response.json()


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


# ---- transactions (the projection) ------------------------------------------------------------


@both_backends
async def test_transactions_are_newest_first_with_balance_after(
    api: httpx.AsyncClient, services: Services
) -> None:
    created = await open_account(api, balance="100")
    other = await open_account(api, "Other", "0")
    account_id = created["id"]
    await deposit(api, account_id, "50.25", description="pay")
    await withdraw(api, account_id, 20)
    transfer = await api.post(
        "/transfers",
        json={
            "from_account_id": account_id,
            "to_account_id": other["id"],
            "amount": "30.25",
            "description": "rent",
        },
    )
    assert transfer.status_code == 201
    transfer_id = transfer.json()["id"]
    await wait_for_projections(services)

    response = await api.get(f"/accounts/{account_id}/transactions")

    assert response.status_code == 200
    page = response.json()
    assert page["has_more"] is False
    assert page["next_cursor"] is None
    rows = page["data"]
    summary = [(r["type"], r["amount"], r["balance_after"], r["version"]) for r in rows]
    assert summary == [
        ("transfer_out", "30.25", "100.00", 4),
        ("withdrawal", "20.00", "130.25", 3),
        ("deposit", "50.25", "150.25", 2),
        ("opening", "100.00", "100.00", 1),
    ]
    for row in rows:
        assert set(row) == {
            "id",
            "type",
            "amount",
            "balance_after",
            "description",
            "version",
            "transfer_id",
            "occurred_at",
        }
        parse_time(row["occurred_at"])
    assert rows[0]["transfer_id"] == transfer_id
    assert rows[0]["description"] == "rent"
    assert rows[2]["description"] == "pay"
    assert rows[1]["transfer_id"] is None
    received = (await api.get(f"/accounts/{other['id']}/transactions")).json()["data"]
    assert [(r["type"], r["amount"], r["balance_after"], r["transfer_id"]) for r in received] == [
        ("transfer_in", "30.25", "30.25", transfer_id),
        ("opening", "0.00", "0.00", None),
    ]


async def test_transactions_are_paged_newest_first(
    api: httpx.AsyncClient, services: Services
) -> None:
    created = await open_account(api, balance="0")
    for amount in range(1, 6):
        await deposit(api, created["id"], amount)
    await wait_for_projections(services)

    first = (await api.get(f"/accounts/{created['id']}/transactions", params={"limit": 4})).json()
    second = (
        await api.get(
            f"/accounts/{created['id']}/transactions",
            params={"limit": 4, "cursor": first["next_cursor"]},
        )
    ).json()

    assert [r["version"] for r in first["data"]] == [6, 5, 4, 3]
    assert first["has_more"] is True
    assert [r["version"] for r in second["data"]] == [2, 1]
    assert second["has_more"] is False
    assert second["next_cursor"] is None


async def test_closing_adds_no_transaction(api: httpx.AsyncClient, services: Services) -> None:
    created = await open_account(api, balance="0")
    await api.post(f"/accounts/{created['id']}/close", json={"reason": "x"})
    await wait_for_projections(services)

    rows = (await api.get(f"/accounts/{created['id']}/transactions")).json()["data"]

    assert [r["type"] for r in rows] == ["opening"]


# ---- the list of accounts ---------------------------------------------------------------------


@both_backends
async def test_list_accounts_pages_oldest_first(api: httpx.AsyncClient, services: Services) -> None:
    ids = [(await open_account(api, f"Owner {i}", str(i)))["id"] for i in range(5)]
    await deposit(api, ids[0], "1.5")
    await wait_for_projections(services)

    first = (await api.get("/accounts", params={"limit": 2})).json()
    second = (
        await api.get("/accounts", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    third = (
        await api.get("/accounts", params={"limit": 2, "cursor": second["next_cursor"]})
    ).json()

    assert [a["id"] for a in first["data"] + second["data"] + third["data"]] == ids
    assert (first["has_more"], second["has_more"], third["has_more"]) == (True, True, False)
    assert third["next_cursor"] is None
    assert first["data"][0] == (await api.get(f"/accounts/{ids[0]}")).json()
    assert first["data"][0]["balance"] == "1.50"
    assert first["data"][1]["owner_name"] == "Owner 1"


async def test_list_accounts_is_empty_at_first(api: httpx.AsyncClient) -> None:
    response = await api.get("/accounts")

    assert response.status_code == 200
    assert response.json() == {"data": [], "has_more": False, "next_cursor": None}


async def test_list_accounts_shows_closed_accounts_as_closed(
    api: httpx.AsyncClient, services: Services
) -> None:
    created = await open_account(api, balance="0")
    await api.post(f"/accounts/{created['id']}/close", json={"reason": "x"})
    await wait_for_projections(services)

    listed = (await api.get("/accounts")).json()["data"]

    assert [(a["id"], a["status"], a["version"]) for a in listed] == [(created["id"], "closed", 2)]


# ---- temporal reads ---------------------------------------------------------------------------


async def test_get_account_at_a_version_shows_that_version(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="10")
    after_deposit = await deposit(api, created["id"], "5")
    await withdraw(api, created["id"], "15")

    v1 = await api.get(f"/accounts/{created['id']}", params={"version": 1})
    v2 = await api.get(f"/accounts/{created['id']}", params={"version": 2})
    v3 = await api.get(f"/accounts/{created['id']}", params={"version": 3})

    assert v1.status_code == v2.status_code == v3.status_code == 200
    assert v1.json() == created
    assert v2.json() == after_deposit
    assert (v3.json()["balance"], v3.json()["version"]) == ("0.00", 3)


@both_backends
async def test_get_account_as_of_a_moment_shows_the_state_then(api: httpx.AsyncClient) -> None:
    created = await open_account(api, balance="10")
    after_deposit = await deposit(api, created["id"], "5")
    await withdraw(api, created["id"], "15")
    events = (await api.get(f"/accounts/{created['id']}/events")).json()["data"]
    second_at = parse_time(events[1]["recorded_at"])
    third_at = parse_time(events[2]["recorded_at"])

    at_second = await api.get(
        f"/accounts/{created['id']}", params={"as_of": events[1]["recorded_at"]}
    )
    just_before_third = await api.get(
        f"/accounts/{created['id']}",
        params={"as_of": (third_at - timedelta(microseconds=1)).isoformat()},
    )
    in_another_zone = await api.get(
        f"/accounts/{created['id']}",
        params={"as_of": second_at.astimezone(timezone(timedelta(hours=2))).isoformat()},
    )
    now = await api.get(
        f"/accounts/{created['id']}",
        params={"as_of": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    )

    assert at_second.status_code == 200, at_second.text
    assert at_second.json() == after_deposit
    assert just_before_third.json() == after_deposit
    assert in_another_zone.json() == after_deposit
    assert (now.json()["balance"], now.json()["version"]) == ("0.00", 3)


async def test_get_account_as_of_before_creation_is_404(api: httpx.AsyncClient) -> None:
    created = await open_account(api)
    before = parse_time(created["created_at"]) - timedelta(seconds=1)

    response = await api.get(
        f"/accounts/{created['id']}", params={"as_of": before.isoformat().replace("+00:00", "Z")}
    )

    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("version", [2, 3, 1000])
async def test_get_account_beyond_the_current_version_is_404(
    api: httpx.AsyncClient, version: int
) -> None:
    created = await open_account(api)

    response = await api.get(f"/accounts/{created['id']}", params={"version": version})

    assert_problem(response, 404, "not_found")


async def test_get_account_with_both_version_and_as_of_is_400(api: httpx.AsyncClient) -> None:
    created = await open_account(api)

    response = await api.get(
        f"/accounts/{created['id']}",
        params={"version": 1, "as_of": created["created_at"]},
    )

    body = assert_problem(response, 400, "validation_error")
    assert "as_of" in body["error"]
    assert "version" in body["error"]


@pytest.mark.parametrize(
    "as_of",
    [
        *("yesterday", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01", ""),
        *("\u0662026-01-01T00:00:00Z", "2026-01-01T00:00:00Z\n"),  # a non-ASCII digit, a newline
    ],
)
async def test_get_account_as_of_must_be_an_rfc3339_time_with_zone(
    api: httpx.AsyncClient, as_of: str
) -> None:
    created = await open_account(api)

    response = await api.get(f"/accounts/{created['id']}", params={"as_of": as_of})

    assert_problem(response, 400, "validation_error")


async def test_get_account_as_of_rejects_a_unix_timestamp(api: httpx.AsyncClient) -> None:
    created = await open_account(api)

    response = await api.get(f"/accounts/{created['id']}", params={"as_of": "1700000000"})

    assert_problem(response, 400, "validation_error")


@pytest.mark.parametrize("version", ["0", "-1", "abc", "1.5", "99999999999"])
async def test_get_account_version_must_be_a_positive_integer(
    api: httpx.AsyncClient, version: str
) -> None:
    created = await open_account(api)

    response = await api.get(f"/accounts/{created['id']}", params={"version": version})

    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["field"] == "version"


@pytest.mark.parametrize(
    ("as_of", "answer"),
    [("0001-01-01T00:00:00+01:00", 404), ("9999-12-31T23:59:59-01:00", 200)],
)
async def test_get_account_as_of_at_the_edge_of_time_is_answered(
    api: httpx.AsyncClient, as_of: str, answer: int
) -> None:
    created = await open_account(api)

    response = await api.get(f"/accounts/{created['id']}", params={"as_of": as_of})

    if response.status_code == 400:
        assert_problem(response, 400, "validation_error")
    elif answer == 404:
        assert_problem(response, 404, "not_found")
    else:
        assert response.status_code == 200, response.text
        assert response.json() == created
