"""`Idempotency-Key` through the HTTP API: replays, reuse, scopes, outcomes kept and not kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import (
    BOTH_BACKENDS,
    api_client,
    assert_problem,
    open_account,
    snapshot_store,
)

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import Services

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)


def key(value: str | None = None, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": value or f"key-{uuid.uuid4()}", **headers}


async def event_count(services: Services) -> int:
    return await services.store.head_position()


def assert_replay_of(first: httpx.Response, replay: httpx.Response) -> None:
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["content-type"] == first.headers["content-type"]
    assert replay.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert replay.headers.get("location") == first.headers.get("location")


# ---- replays of successes ---------------------------------------------------------------------


@both_backends
async def test_open_account_replay_returns_the_same_account_and_location(
    api: httpx.AsyncClient, services: Services
) -> None:
    headers = key()
    body = {"owner_name": "Ada", "initial_balance": "10"}

    first = await api.post("/accounts", json=body, headers=headers)
    head = await event_count(services)
    replay = await api.post("/accounts", json=body, headers=headers)

    assert first.status_code == 201
    assert_replay_of(first, replay)
    assert replay.headers["location"] == f"/accounts/{first.json()['id']}"
    assert await event_count(services) == head == 1
    listed = (await api.get(f"/accounts/{first.json()['id']}")).json()
    assert listed == first.json()


@pytest.mark.parametrize("action", ["deposit", "withdraw"])
async def test_a_retried_money_movement_happens_once(
    api: httpx.AsyncClient, services: Services, action: str
) -> None:
    account = await open_account(api, balance="100")
    headers = key()
    path = f"/accounts/{account['id']}/{action}"

    first = await api.post(path, json={"amount": "12.50"}, headers=headers)
    head = await event_count(services)
    replays = [await api.post(path, json={"amount": "12.50"}, headers=headers) for _ in range(3)]

    assert first.status_code == 200
    for replay in replays:
        assert_replay_of(first, replay)
    assert await event_count(services) == head
    expected = "112.50" if action == "deposit" else "87.50"
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == expected


async def test_a_retried_close_is_replayed_not_refused_as_closed(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0")
    headers = key()
    path = f"/accounts/{account['id']}/close"

    first = await api.post(path, json={"reason": "bye"}, headers=headers)
    replay = await api.post(path, json={"reason": "bye"}, headers=headers)

    assert first.status_code == 200
    assert_replay_of(first, replay)
    assert await event_count(services) == 2


@both_backends
async def test_a_retried_transfer_moves_money_once(
    api: httpx.AsyncClient, services: Services
) -> None:
    source = await open_account(api, "Source", "100")
    target = await open_account(api, "Target", "0")
    headers = key()
    body = {"from_account_id": source["id"], "to_account_id": target["id"], "amount": "30"}

    first = await api.post("/transfers", json=body, headers=headers)
    head = await event_count(services)
    replay = await api.post("/transfers", json=body, headers=headers)

    assert first.status_code == 201
    assert_replay_of(first, replay)
    assert replay.headers["location"] == f"/transfers/{first.json()['id']}"
    assert await event_count(services) == head
    assert (await api.get(f"/accounts/{source['id']}")).json()["balance"] == "70.00"
    assert (await api.get(f"/accounts/{target['id']}")).json()["balance"] == "30.00"


async def test_the_fingerprint_ignores_key_order_and_whitespace(
    api: httpx.AsyncClient, services: Services
) -> None:
    headers = {**key(), "content-type": "application/json"}

    first = await api.post(
        "/accounts", content=b'{"owner_name": "Ada", "initial_balance": "10"}', headers=headers
    )
    replay = await api.post(
        "/accounts", content=b'{ "initial_balance":"10",\n"owner_name":"Ada" }', headers=headers
    )

    assert_replay_of(first, replay)
    assert await event_count(services) == 1


async def test_the_replay_is_stable_after_later_writes(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0")
    headers = key()
    path = f"/accounts/{account['id']}/deposit"
    first = await api.post(path, json={"amount": 1}, headers=headers)
    await api.post(path, json={"amount": 5})

    replay = await api.post(path, json={"amount": 1}, headers=headers)

    assert_replay_of(first, replay)
    assert replay.json()["balance"] == "1.00"
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == "6.00"


# ---- reuse with another request ---------------------------------------------------------------


async def test_the_same_key_with_another_body_is_422_idempotency_key_reused(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="100")
    headers = key()
    path = f"/accounts/{account['id']}/deposit"
    await api.post(path, json={"amount": 1}, headers=headers)
    before = await snapshot_store(services)

    response = await api.post(path, json={"amount": 2}, headers=headers)

    assert_problem(response, 422, "idempotency_key_reused")
    assert "idempotent-replayed" not in response.headers
    assert await snapshot_store(services) == before


@pytest.mark.parametrize(
    "second",
    ["withdraw", "other-account", "transfer", "open", "description"],
)
async def test_the_same_key_on_another_endpoint_or_target_is_reused(
    api: httpx.AsyncClient, services: Services, second: str
) -> None:
    account = await open_account(api, balance="100")
    other = await open_account(api, "Other", "100")
    headers = key()
    await api.post(f"/accounts/{account['id']}/deposit", json={"amount": 1}, headers=headers)
    before = await snapshot_store(services)

    requests: dict[str, tuple[str, dict[str, Any]]] = {
        "withdraw": (f"/accounts/{account['id']}/withdraw", {"amount": 1}),
        "other-account": (f"/accounts/{other['id']}/deposit", {"amount": 1}),
        "transfer": (
            "/transfers",
            {"from_account_id": account["id"], "to_account_id": other["id"], "amount": 1},
        ),
        "open": ("/accounts", {"owner_name": "x", "initial_balance": 1}),
        "description": (f"/accounts/{account['id']}/deposit", {"amount": 1, "description": "d"}),
    }
    path, body = requests[second]
    response = await api.post(path, json=body, headers=headers)

    assert_problem(response, 422, "idempotency_key_reused")
    assert await snapshot_store(services) == before


# ---- outcomes without events are kept --------------------------------------------------------


@both_backends
async def test_an_insufficient_funds_answer_is_replayed_even_once_funds_arrive(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="10")
    headers = key()
    path = f"/accounts/{account['id']}/withdraw"
    first = await api.post(path, json={"amount": 50}, headers=headers)
    await api.post(f"/accounts/{account['id']}/deposit", json={"amount": 100})
    before = await snapshot_store(services)

    replay = await api.post(path, json={"amount": 50}, headers=headers)

    assert_problem(first, 422, "insufficient_funds")
    assert_replay_of(first, replay)
    assert await snapshot_store(services) == before
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == "110.00"


async def test_a_not_found_answer_is_replayed(api: httpx.AsyncClient) -> None:
    headers = key()
    path = f"/accounts/{uuid.uuid4()}/deposit"

    first = await api.post(path, json={"amount": 1}, headers=headers)
    replay = await api.post(path, json={"amount": 1}, headers=headers)

    assert_problem(first, 404, "not_found")
    assert_replay_of(first, replay)


async def test_a_transfer_to_an_unknown_account_is_replayed_as_404(
    api: httpx.AsyncClient,
) -> None:
    source = await open_account(api, "Source", "10")
    headers = key()
    body = {"from_account_id": source["id"], "to_account_id": str(uuid.uuid4()), "amount": 1}

    first = await api.post("/transfers", json=body, headers=headers)
    replay = await api.post("/transfers", json=body, headers=headers)

    assert_problem(first, 404, "not_found")
    assert_replay_of(first, replay)


async def test_a_version_conflict_answer_is_replayed_with_its_current_version(
    api: httpx.AsyncClient,
) -> None:
    account = await open_account(api, balance="10")
    headers = key()
    path = f"/accounts/{account['id']}/deposit"
    first = await api.post(path, json={"amount": 1, "expected_version": 2}, headers=headers)
    await api.post(path, json={"amount": 1})  # now the account *is* at version 2

    replay = await api.post(path, json={"amount": 1, "expected_version": 2}, headers=headers)

    assert assert_problem(first, 409, "version_conflict")["current_version"] == 1
    assert_replay_of(first, replay)


async def test_a_refused_transfer_is_replayed(api: httpx.AsyncClient) -> None:
    source = await open_account(api, "Source", "1")
    target = await open_account(api, "Target", "0")
    headers = key()
    body = {"from_account_id": source["id"], "to_account_id": target["id"], "amount": 5}
    first = await api.post("/transfers", json=body, headers=headers)
    await api.post(f"/accounts/{source['id']}/deposit", json={"amount": 100})

    replay = await api.post("/transfers", json=body, headers=headers)

    assert_problem(first, 422, "insufficient_funds")
    assert_replay_of(first, replay)


# ---- requests never executed store nothing ----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"amount": "abc"}', "application/json", 400),
        (b'{"amount": 1', "application/json", 400),
        (b'{"amount": 1}', "text/plain", 415),
    ],
)
async def test_a_request_refused_before_execution_leaves_the_key_free(
    api: httpx.AsyncClient, content: bytes, content_type: str, status: int
) -> None:
    account = await open_account(api, balance="0")
    headers = key()
    path = f"/accounts/{account['id']}/deposit"
    refused = await api.post(
        path, content=content, headers={**headers, "content-type": content_type}
    )

    fixed = await api.post(path, json={"amount": 1}, headers=headers)
    replay = await api.post(path, json={"amount": 1}, headers=headers)

    assert refused.status_code == status
    assert fixed.status_code == 200, fixed.text
    assert "idempotent-replayed" not in fixed.headers
    assert fixed.json()["balance"] == "1.00"
    assert_replay_of(fixed, replay)


async def test_a_same_account_refusal_leaves_the_key_free(api: httpx.AsyncClient) -> None:
    source = await open_account(api, "Source", "10")
    target = await open_account(api, "Target", "0")
    headers = key()

    refused = await api.post(
        "/transfers",
        json={"from_account_id": source["id"], "to_account_id": source["id"], "amount": 1},
        headers=headers,
    )
    fixed = await api.post(
        "/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": 1},
        headers=headers,
    )

    assert_problem(refused, 400, "same_account")
    assert fixed.status_code == 201, fixed.text


# ---- scopes -----------------------------------------------------------------------------------


@both_backends
async def test_keys_are_scoped_by_user(api: httpx.AsyncClient, services: Services) -> None:
    shared = f"shared-{uuid.uuid4()}"
    mine = await open_account(api, balance="0")
    async with api_client(services) as other_user:
        theirs = await open_account(other_user, balance="0")

        one = await api.post(
            f"/accounts/{mine['id']}/deposit", json={"amount": 1}, headers=key(shared)
        )
        two = await other_user.post(
            f"/accounts/{theirs['id']}/deposit", json={"amount": 2}, headers=key(shared)
        )

    assert one.status_code == two.status_code == 200
    assert "idempotent-replayed" not in two.headers
    assert (await api.get(f"/accounts/{mine['id']}")).json()["balance"] == "1.00"
    assert await event_count(services) == 4


async def test_a_client_id_does_not_split_a_users_key_scope(api: httpx.AsyncClient) -> None:
    account = await open_account(api, balance="0")
    path = f"/accounts/{account['id']}/deposit"
    shared = f"shared-{uuid.uuid4()}"

    first = await api.post(path, json={"amount": 1}, headers=key(shared, **{"x-client-id": "a"}))
    again = await api.post(path, json={"amount": 1}, headers=key(shared, **{"x-client-id": "b"}))
    other = await api.post(path, json={"amount": 2}, headers=key(shared, **{"x-client-id": "c"}))

    assert_replay_of(first, again)
    assert_problem(other, 422, "idempotency_key_reused")
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == "1.00"


async def test_a_key_is_case_sensitive(api: httpx.AsyncClient) -> None:
    account = await open_account(api, balance="0")
    path = f"/accounts/{account['id']}/deposit"

    lower = await api.post(path, json={"amount": 1}, headers=key("abc"))
    upper = await api.post(path, json={"amount": 1}, headers=key("ABC"))

    assert lower.status_code == upper.status_code == 200
    assert "idempotent-replayed" not in upper.headers
    assert upper.json()["version"] == 3


# ---- in flight --------------------------------------------------------------------------------


def slow_down(
    services: Services, monkeypatch: pytest.MonkeyPatch, name: str, started: asyncio.Event
) -> asyncio.Event:
    """Make `services.accounts.<name>` wait for the returned event before it runs."""
    release = asyncio.Event()
    original: Callable[..., Awaitable[Any]] = getattr(services.accounts, name)

    async def slow(command: Any, context: CommandContext) -> Any:
        started.set()
        await release.wait()
        return await original(command, context)

    monkeypatch.setattr(services.accounts, name, slow)
    return release


@both_backends
async def test_a_retry_while_the_first_runs_is_409_idempotency_in_flight(
    api: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await open_account(api, balance="0")
    started = asyncio.Event()
    release = slow_down(services, monkeypatch, "deposit", started)
    headers = key()
    path = f"/accounts/{account['id']}/deposit"

    first = asyncio.create_task(api.post(path, json={"amount": 1}, headers=headers))
    await asyncio.wait_for(started.wait(), 5)
    retry = await api.post(path, json={"amount": 1}, headers=headers)
    other_body = await api.post(path, json={"amount": 2}, headers=headers)
    other_key = asyncio.create_task(api.post(path, json={"amount": 2}, headers=key()))
    release.set()
    done = await first
    replay = await api.post(path, json={"amount": 1}, headers=headers)

    assert_problem(retry, 409, "idempotency_in_flight")
    # Its fingerprint is not stored yet: "in flight" and "reused" are both truthful.
    other_code = {409: "idempotency_in_flight", 422: "idempotency_key_reused"}
    assert_problem(other_body, other_body.status_code, other_code.get(other_body.status_code, "?"))
    assert done.status_code == 200
    assert (await other_key).status_code == 200
    assert_replay_of(done, replay)
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == "3.00"


async def test_an_in_flight_refusal_is_not_stored(
    api: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await open_account(api, balance="10")
    started = asyncio.Event()
    release = slow_down(services, monkeypatch, "withdraw", started)
    headers = key()
    path = f"/accounts/{account['id']}/withdraw"

    first = asyncio.create_task(api.post(path, json={"amount": 50}, headers=headers))
    await asyncio.wait_for(started.wait(), 5)
    busy = await api.post(path, json={"amount": 50}, headers=headers)
    release.set()
    refused = await first
    replay = await api.post(path, json={"amount": 50}, headers=headers)

    assert_problem(busy, 409, "idempotency_in_flight")
    assert_problem(refused, 422, "insufficient_funds")
    assert_replay_of(refused, replay)


async def test_concurrent_requests_with_one_key_execute_once(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0")
    headers = key()
    path = f"/accounts/{account['id']}/deposit"

    responses = await asyncio.gather(
        *(api.post(path, json={"amount": 1}, headers=headers) for _ in range(20))
    )

    executed = [r for r in responses if r.status_code == 200]
    assert executed
    assert all(r.content == executed[0].content for r in executed)
    for response in responses:
        if response.status_code != 200:
            assert_problem(response, 409, "idempotency_in_flight")
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == "1.00"
    assert await event_count(services) == 2


# ---- records of an earlier release -----------------------------------------------------------


@both_backends
async def test_a_record_of_an_earlier_release_replays_the_response_it_stored(
    api: httpx.AsyncClient, services: Services
) -> None:
    """Before the stored answer became the application outcome, a record held the HTTP
    status and body it answered with: those are replayed as they are."""
    account = await open_account(api, balance="10")
    deposit, opening = key(), key()
    await api.post(f"/accounts/{account['id']}/deposit", json={"amount": 1}, headers=deposit)
    created = await api.post(
        "/accounts", json={"owner_name": "Bo", "initial_balance": 1}, headers=opening
    )
    stored = {
        deposit["Idempotency-Key"]: (200, '{"earlier": "release"}'),
        opening["Idempotency-Key"]: (201, f'{{"id": "{created.json()["id"]}", "old": true}}'),
    }
    for name, (status, body) in stored.items():
        await services.db.execute(
            "UPDATE idempotency_keys SET status = $1, body = $2 WHERE key = $3", status, body, name
        )

    replay = await api.post(
        f"/accounts/{account['id']}/deposit", json={"amount": 1}, headers=deposit
    )
    again = await api.post(
        "/accounts", json={"owner_name": "Bo", "initial_balance": 1}, headers=opening
    )

    assert (replay.status_code, replay.content) == (200, b'{"earlier": "release"}')
    assert replay.headers["idempotent-replayed"] == "true"
    assert again.status_code == 201
    assert again.json() == {"id": created.json()["id"], "old": True}
    assert again.headers["location"] == f"/accounts/{created.json()['id']}"
    assert (await api.get(f"/accounts/{account['id']}")).json()["balance"] == "11.00"
