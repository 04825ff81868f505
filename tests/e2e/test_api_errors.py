"""Every error code reachable without identity, in the problem format of API.md."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import (
    BOTH_BACKENDS,
    answer_with_a_bug,
    api_client,
    assert_problem,
    open_account,
    snapshot_store,
)

from banking_es.bootstrap import Services
from banking_es.eventstore.base import StoreUnavailable

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
JSON = {"content-type": "application/json"}


async def close(api: httpx.AsyncClient, account_id: str, **body: Any) -> httpx.Response:
    return await api.post(f"/accounts/{account_id}/close", json=body)


async def closed_account(api: httpx.AsyncClient) -> str:
    account_id: str = (await open_account(api, "Closed", "0"))["id"]
    assert (await close(api, account_id, reason="x")).status_code == 200
    return account_id


# ---- 400 --------------------------------------------------------------------------------------


@both_backends
async def test_malformed_json_is_invalid_json(api: httpx.AsyncClient, services: Services) -> None:
    before = await snapshot_store(services)

    response = await api.post("/accounts", content=b'{"owner_name": "x",', headers=JSON)

    body = assert_problem(response, 400, "invalid_json")
    assert "errors" not in body
    assert await snapshot_store(services) == before


async def test_validation_lists_every_problem_in_one_message(
    api: httpx.AsyncClient, services: Services
) -> None:
    before = await snapshot_store(services)

    response = await api.post("/accounts", json={"initial_balance": "-5"})

    body = assert_problem(response, 400, "validation_error")
    assert body["error"] == "owner_name is required, initial_balance must be non-negative"
    assert [p["field"] for p in body["errors"]] == ["owner_name", "initial_balance"]
    assert await snapshot_store(services) == before


async def test_query_validation_names_the_parameter(api: httpx.AsyncClient) -> None:
    response = await api.get("/accounts", params={"limit": "0"})

    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["field"] == "limit"
    assert body["error"].startswith("limit ")


async def test_a_malformed_path_id_is_a_validation_error(api: httpx.AsyncClient) -> None:
    response = await api.get("/accounts/not-a-uuid")

    body = assert_problem(response, 400, "validation_error")
    assert body["errors"] == [{"field": "account_id", "message": "must be a UUID"}]


async def test_a_garbage_cursor_is_invalid_cursor(api: httpx.AsyncClient) -> None:
    response = await api.get("/accounts", params={"cursor": "definitely-not-a-cursor"})

    assert_problem(response, 400, "invalid_cursor")


# ---- 401 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/accounts", {"owner_name": "Eve", "initial_balance": 1}),
        ("POST", "/accounts/{id}/deposit", {"amount": 1}),
        ("POST", "/accounts/{id}/withdraw", {"amount": 1}),
        ("POST", "/accounts/{id}/close", {"reason": "x"}),
        ("POST", "/transfers", {"from_account_id": "{id}", "to_account_id": "{id}", "amount": 1}),
        ("GET", "/accounts", None),
        ("GET", "/accounts/{id}", None),
        ("GET", "/accounts/{id}/events", None),
    ],
)
async def test_without_a_valid_token_it_is_401_and_nothing_changes(
    api: httpx.AsyncClient,
    services: Services,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    account_id = (await open_account(api, balance="0"))["id"]
    content = json.dumps(body).replace("{id}", account_id) if body is not None else None
    before = await snapshot_store(services)

    for authorization in (None, "Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer "):
        request = api.build_request(
            method, path.replace("{id}", account_id), content=content, headers=JSON
        )
        del request.headers["Authorization"]
        if authorization:
            request.headers["Authorization"] = authorization

        response = await api.send(request)

        assert_problem(response, 401, "unauthenticated")
    assert await snapshot_store(services) == before


# ---- 404, 405 ---------------------------------------------------------------------------------


async def test_an_unknown_account_is_not_found(api: httpx.AsyncClient) -> None:
    unknown = str(uuid.uuid4())

    response = await api.get(f"/accounts/{unknown}")

    body = assert_problem(response, 404, "not_found")
    assert unknown in body["error"]


async def test_an_unknown_transfer_is_not_found(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/transfers/{uuid.uuid4()}")

    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/accounts/6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01/nope"),
        ("GET", "/transfers/6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01/events"),
        ("GET", "/health"),
        ("GET", "/"),
    ],
)
async def test_an_unknown_route_is_not_found(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path)

    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/accounts", "POST"),
        ("PUT", "/accounts", "POST"),
        ("PATCH", "/accounts/6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01", "GET"),
        ("DELETE", "/accounts/6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01", "GET"),
        ("GET", "/accounts/6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01/deposit", "POST"),
        ("PUT", "/accounts/6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01/close", "POST"),
        ("GET", "/transfers", "POST"),
        ("DELETE", "/transfers/6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01", "GET"),
        ("POST", "/health/live", "GET"),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    api: httpx.AsyncClient, services: Services, method: str, path: str, allowed: str
) -> None:
    before = await snapshot_store(services)

    response = await api.request(method, path)

    assert_problem(response, 405, "method_not_allowed")
    assert allowed in response.headers.get("allow", ""), response.headers
    assert await snapshot_store(services) == before


# ---- 413, 415 ---------------------------------------------------------------------------------


async def test_a_body_over_64_kib_is_payload_too_large(
    api: httpx.AsyncClient, services: Services
) -> None:
    before = await snapshot_store(services)
    content = json.dumps({"owner_name": "x" * (65 * 1024), "initial_balance": 1})

    response = await api.post("/accounts", content=content, headers=JSON)

    assert_problem(response, 413, "payload_too_large")
    assert await snapshot_store(services) == before


async def test_a_plain_text_body_is_unsupported_media_type(
    api: httpx.AsyncClient, services: Services
) -> None:
    before = await snapshot_store(services)

    response = await api.post(
        "/accounts",
        content=b'{"owner_name": "x", "initial_balance": 1}',
        headers={"content-type": "text/plain"},
    )

    assert_problem(response, 415, "unsupported_media_type")
    assert await snapshot_store(services) == before


# ---- 409 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["deposit", "withdraw", "close"])
async def test_a_stale_expected_version_is_409_with_the_current_version(
    api: httpx.AsyncClient, services: Services, action: str
) -> None:
    account = await open_account(api, balance="0")
    await api.post(f"/accounts/{account['id']}/deposit", json={"amount": 5})
    before = await snapshot_store(services)
    body: dict[str, Any] = {"expected_version": 1}
    if action != "close":
        body["amount"] = 1

    response = await api.post(f"/accounts/{account['id']}/{action}", json=body)

    problem = assert_problem(response, 409, "version_conflict")
    assert problem["current_version"] == 2
    assert "errors" not in problem
    assert await snapshot_store(services) == before


async def test_expected_version_zero_conflicts_with_an_existing_account(
    api: httpx.AsyncClient,
) -> None:
    account = await open_account(api)

    response = await api.post(
        f"/accounts/{account['id']}/deposit", json={"amount": 1, "expected_version": 0}
    )

    assert assert_problem(response, 409, "version_conflict")["current_version"] == 1


@both_backends
async def test_an_expected_version_ahead_of_the_account_conflicts(api: httpx.AsyncClient) -> None:
    account = await open_account(api)

    response = await api.post(
        f"/accounts/{account['id']}/deposit", json={"amount": 1, "expected_version": 9}
    )

    assert assert_problem(response, 409, "version_conflict")["current_version"] == 1


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("deposit", {"amount": 1}),
        ("withdraw", {"amount": 1}),
        ("close", {"reason": "again"}),
        ("deposit", {"amount": 1, "expected_version": 2}),
    ],
)
async def test_any_write_to_a_closed_account_is_409_account_closed(
    api: httpx.AsyncClient, services: Services, action: str, body: dict[str, Any]
) -> None:
    account_id = await closed_account(api)
    before = await snapshot_store(services)

    response = await api.post(f"/accounts/{account_id}/{action}", json=body)

    assert_problem(response, 409, "account_closed")
    assert await snapshot_store(services) == before


@both_backends
async def test_a_withdrawal_beyond_the_balance_of_a_closed_account_is_account_closed(
    api: httpx.AsyncClient,
) -> None:
    account_id = await closed_account(api)

    response = await api.post(f"/accounts/{account_id}/withdraw", json={"amount": 1000})

    assert_problem(response, 409, "account_closed")


# ---- 422 --------------------------------------------------------------------------------------


@both_backends
async def test_withdrawing_more_than_the_balance_is_422_insufficient_funds(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="10")
    before = await snapshot_store(services)

    response = await api.post(f"/accounts/{account['id']}/withdraw", json={"amount": "10.01"})

    body = assert_problem(response, 422, "insufficient_funds")
    assert "10.00" in body["error"]
    assert await snapshot_store(services) == before
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == "10.00"


async def test_closing_an_account_with_money_is_422_balance_not_zero(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0.01")
    before = await snapshot_store(services)

    response = await close(api, account["id"], reason="x")

    assert_problem(response, 422, "balance_not_zero")
    assert await snapshot_store(services) == before
    assert (await api.get(f"/accounts/{account['id']}")).json()["status"] == "open"


async def test_a_transfer_between_currencies_is_422_currency_mismatch(
    api: httpx.AsyncClient,
) -> None:
    usd = await open_account(api, "USD", "10")
    eur = await open_account(api, "EUR", "10", currency="EUR")

    response = await api.post(
        "/transfers", json={"from_account_id": usd["id"], "to_account_id": eur["id"], "amount": 1}
    )

    assert_problem(response, 422, "currency_mismatch")


async def test_a_deposit_past_fifteen_integer_digits_is_422_balance_limit_exceeded(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="999999999999999.00")
    before = await snapshot_store(services)

    response = await api.post(f"/accounts/{account['id']}/deposit", json={"amount": "0.99"})
    assert response.status_code == 200
    after_fill = await snapshot_store(services)
    response = await api.post(f"/accounts/{account['id']}/deposit", json={"amount": "0.01"})

    assert after_fill.head == before.head + 1
    assert_problem(response, 422, "balance_limit_exceeded")
    assert await snapshot_store(services) == after_fill


# ---- 500, 503 ---------------------------------------------------------------------------------


async def test_a_bug_is_a_500_internal_error_without_details(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = await answer_with_a_bug(services, monkeypatch, "bug-report-1")

    body = assert_problem(response, 500, "internal_error", request_id=False)
    assert "SECRET" not in response.text
    assert "RuntimeError" not in response.text
    assert "bug-report-1" in body["error"]


async def test_a_500_answer_carries_the_request_id_header(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = await answer_with_a_bug(services, monkeypatch, "bug-report-2")

    assert response.status_code == 500
    assert response.headers.get("x-request-id") == "bug-report-2"


async def test_an_unreachable_event_store_is_503_with_retry_after(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = str(uuid.uuid4())

    async def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(services.store, "read_stream", down)
    monkeypatch.setattr(services.store, "latest_snapshot", down)
    async with api_client(services) as client:
        read = await client.get(f"/accounts/{account_id}")
        write = await client.post(f"/accounts/{account_id}/deposit", json={"amount": 1})

    for response in (read, write):
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["retry-after"].isdigit()
