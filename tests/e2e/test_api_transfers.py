"""/transfers through the HTTP API: atomic moves between accounts, and their refusals."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import BOTH_BACKENDS, assert_problem, open_account, snapshot_store

from banking_es.bootstrap import Services

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)


async def transfer(api: httpx.AsyncClient, source: str, target: str, amount: Any, **extra: Any):
    return await api.post(
        "/transfers",
        json={"from_account_id": source, "to_account_id": target, "amount": amount, **extra},
    )


async def balance(api: httpx.AsyncClient, account_id: str) -> str:
    value: str = (await api.get(f"/accounts/{account_id}")).json()["balance"]
    return value


@both_backends
async def test_transfer_answers_201_with_location_and_moves_the_money(
    api: httpx.AsyncClient,
) -> None:
    source = await open_account(api, "Source", "100")
    target = await open_account(api, "Target", "5")

    response = await transfer(api, source["id"], target["id"], "40.5", description="rent")

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "id",
        "from_account_id",
        "to_account_id",
        "amount",
        "currency",
        "status",
        "created_at",
    }
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert response.headers["location"] == f"/transfers/{body['id']}"
    assert body["from_account_id"] == source["id"]
    assert body["to_account_id"] == target["id"]
    assert body["amount"] == "40.50"
    assert body["currency"] == "USD"
    assert body["status"] == "completed"
    assert body["created_at"].endswith("Z")
    assert await balance(api, source["id"]) == "59.50"
    assert await balance(api, target["id"]) == "45.50"


async def test_get_transfer_returns_what_create_answered(api: httpx.AsyncClient) -> None:
    source = await open_account(api, "Source", "100", currency="EUR")
    target = await open_account(api, "Target", "0", currency="eur")
    created = (await transfer(api, source["id"], target["id"], 1)).json()

    response = await api.get(f"/transfers/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert created["currency"] == "EUR"


@both_backends
async def test_transfer_appends_one_event_to_each_account_in_one_transaction(
    api: httpx.AsyncClient, services: Services
) -> None:
    source = await open_account(api, "Source", "100")
    target = await open_account(api, "Target", "0")
    before = await services.store.head_position()

    created = (await transfer(api, source["id"], target["id"], "10", description="x")).json()

    after = await snapshot_store(services)
    assert after.head == before + 2
    sent = (await api.get(f"/accounts/{source['id']}/events")).json()["data"][-1]
    received = (await api.get(f"/accounts/{target['id']}/events")).json()["data"][-1]
    assert sent["type"] == "TransferSent"
    assert sent["data"] == {
        "transfer_id": created["id"],
        "to_account_id": target["id"],
        "amount": "10.00",
        "description": "x",
    }
    assert received["type"] == "TransferReceived"
    assert received["data"] == {
        "transfer_id": created["id"],
        "from_account_id": source["id"],
        "amount": "10.00",
        "description": "x",
    }
    assert {sent["position"], received["position"]} == {before + 1, before + 2}


async def test_transfer_of_the_whole_balance_is_allowed(api: httpx.AsyncClient) -> None:
    source = await open_account(api, "Source", "10.01")
    target = await open_account(api, "Target", "0")

    response = await transfer(api, source["id"], target["id"], "10.01")

    assert response.status_code == 201
    assert await balance(api, source["id"]) == "0.00"


async def test_transfer_ids_are_compared_case_insensitively(api: httpx.AsyncClient) -> None:
    source = await open_account(api, "Source", "10")
    target = await open_account(api, "Target", "0")

    response = await transfer(api, source["id"].upper(), target["id"].upper(), "1")

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["from_account_id"], body["to_account_id"]) == (source["id"], target["id"])


# ---- refusals ---------------------------------------------------------------------------------


async def test_transfer_beyond_the_balance_is_422_and_moves_nothing(
    api: httpx.AsyncClient, services: Services
) -> None:
    source = await open_account(api, "Source", "10")
    target = await open_account(api, "Target", "0")
    before = await snapshot_store(services)

    response = await transfer(api, source["id"], target["id"], "10.01")

    assert_problem(response, 422, "insufficient_funds")
    assert await snapshot_store(services) == before
    assert await balance(api, source["id"]) == "10.00"


async def test_transfer_between_currencies_is_422_currency_mismatch(
    api: httpx.AsyncClient, services: Services
) -> None:
    source = await open_account(api, "Source", "10")
    target = await open_account(api, "Target", "0", currency="EUR")
    before = await snapshot_store(services)

    response = await transfer(api, source["id"], target["id"], "1")

    assert_problem(response, 422, "currency_mismatch")
    assert await snapshot_store(services) == before


async def test_transfer_over_the_target_balance_limit_is_422(
    api: httpx.AsyncClient, services: Services
) -> None:
    source = await open_account(api, "Source", "10")
    target = await open_account(api, "Target", "999999999999999.99")
    before = await snapshot_store(services)

    response = await transfer(api, source["id"], target["id"], "0.01")

    assert_problem(response, 422, "balance_limit_exceeded")
    assert await snapshot_store(services) == before


@pytest.mark.parametrize("case", ["lower", "upper"])
async def test_transfer_to_the_same_account_is_400_same_account(
    api: httpx.AsyncClient, services: Services, case: str
) -> None:
    account = await open_account(api, "Source", "10")
    target = account["id"].upper() if case == "upper" else account["id"]
    before = await snapshot_store(services)

    response = await transfer(api, account["id"], target, "1")

    assert_problem(response, 400, "same_account")
    assert await snapshot_store(services) == before


@pytest.mark.parametrize("side", ["from", "to"])
async def test_transfer_with_an_unknown_account_is_404(
    api: httpx.AsyncClient, services: Services, side: str
) -> None:
    account = await open_account(api, "Known", "10")
    unknown = str(uuid.uuid4())
    before = await snapshot_store(services)

    if side == "from":
        response = await transfer(api, unknown, account["id"], "1")
    else:
        response = await transfer(api, account["id"], unknown, "1")

    body = assert_problem(response, 404, "not_found")
    assert unknown in body["error"]
    assert await snapshot_store(services) == before


@pytest.mark.parametrize("side", ["from", "to"])
async def test_transfer_touching_a_closed_account_is_409_account_closed(
    api: httpx.AsyncClient, services: Services, side: str
) -> None:
    open_one = await open_account(api, "Open", "10")
    closed = await open_account(api, "Closed", "0")
    assert (await api.post(f"/accounts/{closed['id']}/close", json={})).status_code == 200
    before = await snapshot_store(services)

    if side == "from":
        response = await transfer(api, closed["id"], open_one["id"], "1")
    else:
        response = await transfer(api, open_one["id"], closed["id"], "1")

    assert_problem(response, 409, "account_closed")
    assert await snapshot_store(services) == before


async def test_get_transfer_of_an_unknown_id_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/transfers/{uuid.uuid4()}")

    assert_problem(response, 404, "not_found")


async def test_an_account_id_is_not_a_transfer_id(api: httpx.AsyncClient) -> None:
    account = await open_account(api)

    response = await api.get(f"/transfers/{account['id']}")

    assert_problem(response, 404, "not_found")


async def test_a_deposit_event_id_is_not_a_transfer_id(api: httpx.AsyncClient) -> None:
    account = await open_account(api)
    await api.post(f"/accounts/{account['id']}/deposit", json={"amount": 1})
    event_ids = [
        e["event_id"] for e in (await api.get(f"/accounts/{account['id']}/events")).json()["data"]
    ]

    for event_id in event_ids:
        assert_problem(await api.get(f"/transfers/{event_id}"), 404, "not_found")


async def test_transfer_received_event_id_is_not_a_transfer_id(api: httpx.AsyncClient) -> None:
    source = await open_account(api, "Source", "10")
    target = await open_account(api, "Target", "0")
    created = (await transfer(api, source["id"], target["id"], "1")).json()
    received = (await api.get(f"/accounts/{target['id']}/events")).json()["data"][-1]
    assert received["event_id"] != created["id"]

    response = await api.get(f"/transfers/{received['event_id']}")

    assert_problem(response, 404, "not_found")
