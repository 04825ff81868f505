"""Read-your-writes, request ids, concurrent writers, and two instances on one database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from tests.api_support import running_services
from tests.e2e.http_support import (
    BOTH_BACKENDS,
    E2E_SETTINGS,
    api_client,
    assert_problem,
    open_account,
    wait_for_projections,
)

from banking_es.bootstrap import Services

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)


async def get_account(api: httpx.AsyncClient, account_id: str) -> dict[str, object]:
    response = await api.get(f"/accounts/{account_id}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


# ---- read-your-writes -------------------------------------------------------------------------


@both_backends
async def test_every_write_is_visible_to_the_next_read(api: httpx.AsyncClient) -> None:
    account = await open_account(api, balance="0")
    account_id = account["id"]
    other = await open_account(api, "Other", "0")
    assert await get_account(api, account_id) == account

    expected = Decimal("0.00")
    for step in range(1, 16):
        if step % 5 == 0:
            response = await api.post(
                "/transfers",
                json={"from_account_id": account_id, "to_account_id": other["id"], "amount": 1},
            )
            assert response.status_code == 201
            expected -= 1
            transfer = await api.get(f"/transfers/{response.json()['id']}")
            assert transfer.json() == response.json()
        elif step % 3 == 0:
            response = await api.post(f"/accounts/{account_id}/withdraw", json={"amount": "0.5"})
            expected -= Decimal("0.5")
        else:
            response = await api.post(f"/accounts/{account_id}/deposit", json={"amount": "1.25"})
            expected += Decimal("1.25")
        assert response.status_code in (200, 201), response.text

        now = await get_account(api, account_id)
        assert now["version"] == step + 1
        assert now["balance"] == f"{expected:.2f}"
        events = (await api.get(f"/accounts/{account_id}/events", params={"limit": 100})).json()
        assert len(events["data"]) == step + 1


async def test_projections_catch_up_with_the_event_store(
    api: httpx.AsyncClient, services: Services
) -> None:
    ids = [(await open_account(api, f"Owner {i}", "10"))["id"] for i in range(3)]
    for account_id in ids:
        await api.post(f"/accounts/{account_id}/deposit", json={"amount": "0.1"})
    await wait_for_projections(services)

    listed = (await api.get("/accounts")).json()["data"]

    assert listed == [await get_account(api, account_id) for account_id in ids]
    for account_id in ids:
        rows = (await api.get(f"/accounts/{account_id}/transactions")).json()["data"]
        assert rows[0]["balance_after"] == "10.10"


# ---- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/health/live", None),
        ("GET", "/accounts", None),
        ("POST", "/accounts", {"owner_name": "Ada", "initial_balance": 1}),
        ("POST", "/accounts", {"owner_name": ""}),
        # a fixed id: pytest-xdist's workers must collect the same test ids
        ("GET", "/accounts/6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b", None),
        ("GET", "/nope", None),
        ("DELETE", "/accounts", None),
    ],
)
async def test_a_sent_request_id_is_echoed(
    api: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    request_id = f"req-{uuid.uuid4()}"

    response = await api.request(method, path, json=body, headers={"x-request-id": request_id})

    assert response.headers["x-request-id"] == request_id


async def test_a_request_id_is_echoed_on_413(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/accounts",
        content=b"x" * (65 * 1024),
        headers={"x-request-id": "big-one", "content-type": "application/json"},
    )

    assert_problem(response, 413, "payload_too_large")
    assert response.headers["x-request-id"] == "big-one"


async def test_a_request_id_is_generated_when_none_is_sent(api: httpx.AsyncClient) -> None:
    responses = [await api.get("/health/live") for _ in range(3)]
    responses.append(await api.get("/nope"))

    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "sent", [pytest.param("x" * 201, id="too-long"), pytest.param("", id="empty")]
)
async def test_an_unusable_request_id_is_replaced(api: httpx.AsyncClient, sent: str) -> None:
    response = await api.get("/health/live", headers={"x-request-id": sent})

    assert response.headers["x-request-id"]
    assert response.headers["x-request-id"] != sent


async def test_the_request_id_is_recorded_in_the_event_metadata(
    api: httpx.AsyncClient, services: Services
) -> None:
    response = await api.post(
        "/accounts",
        json={"owner_name": "Ada", "initial_balance": 1},
        headers={"x-request-id": "trace-me"},
    )

    events = await services.store.read_stream(response.json()["id"])
    assert events[0].metadata.get("request_id") == "trace-me"


# ---- concurrency ------------------------------------------------------------------------------


@both_backends
async def test_a_hundred_concurrent_deposits_all_count(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0")
    path = f"/accounts/{account['id']}/deposit"

    responses = await asyncio.gather(*(api.post(path, json={"amount": "0.01"}) for _ in range(100)))

    assert [r.status_code for r in responses] == [200] * 100
    assert sorted(r.json()["version"] for r in responses) == list(range(2, 102))
    assert len({r.json()["balance"] for r in responses}) == 100
    final = await get_account(api, account["id"])
    assert final["balance"] == "1.00"
    assert final["version"] == 101
    await wait_for_projections(services)
    rows = (await api.get(f"/accounts/{account['id']}/transactions", params={"limit": 1})).json()
    assert rows["data"][0]["balance_after"] == "1.00"


@both_backends
async def test_concurrent_withdrawals_never_overdraw(api: httpx.AsyncClient) -> None:
    account = await open_account(api, balance="50")
    path = f"/accounts/{account['id']}/withdraw"

    responses = await asyncio.gather(*(api.post(path, json={"amount": 1}) for _ in range(80)))

    succeeded = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(succeeded) == 50
    for response in refused:
        assert_problem(response, 422, "insufficient_funds")
    final = await get_account(api, account["id"])
    assert (final["balance"], final["version"]) == ("0.00", 51)


@both_backends
async def test_concurrent_transfers_both_ways_conserve_money(api: httpx.AsyncClient) -> None:
    one = (await open_account(api, "One", "100"))["id"]
    two = (await open_account(api, "Two", "100"))["id"]

    def move(source: str, target: str, amount: str) -> object:
        return api.post(
            "/transfers",
            json={"from_account_id": source, "to_account_id": target, "amount": amount},
        )

    responses = await asyncio.gather(
        *(move(one, two, "3") if i % 2 else move(two, one, "2") for i in range(60))
    )

    assert [r.status_code for r in responses] == [201] * 60
    balances = [(await get_account(api, i))["balance"] for i in (one, two)]
    assert balances == ["70.00", "130.00"]


# ---- two instances on one database ------------------------------------------------------------


@pytest.fixture
async def second_api(
    api: httpx.AsyncClient, api_database_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Another app instance (its own services and cache) on the same database, same user."""
    async with (
        running_services(tmp_path / "second", api_database_url, **E2E_SETTINGS) as services,
        api_client(services, api.headers["Authorization"]) as client,
    ):
        yield client


async def test_a_write_on_one_instance_is_read_on_another(
    api: httpx.AsyncClient, second_api: httpx.AsyncClient
) -> None:
    account = await open_account(api, balance="10")
    assert (await get_account(second_api, account["id"]))["balance"] == "10.00"

    for amount in ("1", "2", "3"):
        await second_api.post(f"/accounts/{account['id']}/deposit", json={"amount": amount})
        await api.post(f"/accounts/{account['id']}/deposit", json={"amount": amount})

    first_view = await get_account(api, account["id"])
    second_view = await get_account(second_api, account["id"])
    assert first_view == second_view
    assert (first_view["balance"], first_view["version"]) == ("22.00", 7)


@both_backends
async def test_concurrent_deposits_through_two_instances_all_count(
    api: httpx.AsyncClient, second_api: httpx.AsyncClient
) -> None:
    account = await open_account(api, balance="0")
    path = f"/accounts/{account['id']}/deposit"

    responses = await asyncio.gather(
        *((api if i % 2 else second_api).post(path, json={"amount": 1}) for i in range(40))
    )

    assert [r.status_code for r in responses] == [200] * 40
    final = await get_account(api, account["id"])
    assert (final["balance"], final["version"]) == ("40.00", 41)


async def test_one_key_on_two_instances_executes_once(
    api: httpx.AsyncClient, second_api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0")
    path = f"/accounts/{account['id']}/deposit"
    headers = {"Idempotency-Key": f"twice-{uuid.uuid4()}"}

    responses = await asyncio.gather(
        *(
            (api if i % 2 else second_api).post(path, json={"amount": 1}, headers=headers)
            for i in range(10)
        )
    )

    done = [r for r in responses if r.status_code == 200]
    assert done
    assert all(r.content == done[0].content for r in done)
    for response in responses:
        if response.status_code != 200:
            assert_problem(response, 409, "idempotency_in_flight")
    assert (await get_account(api, account["id"]))["balance"] == "1.00"
    assert await services.store.head_position() == 2
