"""Reads of /accounts through the HTTP API: transactions (the projection), the list of
accounts, and temporal reads (at a version, as of a moment)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from tests.e2e.http_support import (
    assert_problem,
    both_backends,
    deposit,
    open_account,
    parse_time,
    wait_for_projections,
    withdraw,
)

from banking_es.bootstrap import Services

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
