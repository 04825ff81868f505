"""Role x endpoint -> status: who may see and move which account (API.md, "Roles")."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from tests.api_support import App
from tests.auth import admin_headers, sign_up

# (method, path, body); {own} is alice's account, {other} bob's, {transfer} alice -> bob.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/accounts", {"owner_name": "New", "initial_balance": "0"}),
    ("GET", "/accounts", None),
    ("GET", "/accounts/{own}", None),
    ("GET", "/accounts/{other}", None),
    ("GET", "/accounts/{own}/events", None),
    ("GET", "/accounts/{other}/events", None),
    ("GET", "/accounts/{own}/transactions", None),
    ("GET", "/accounts/{other}/transactions", None),
    ("POST", "/accounts/{own}/deposit", {"amount": "1"}),
    ("POST", "/accounts/{other}/deposit", {"amount": "1"}),
    ("POST", "/accounts/{own}/withdraw", {"amount": "1"}),
    ("POST", "/accounts/{other}/withdraw", {"amount": "1"}),
    ("POST", "/accounts/{own}/close", {"reason": "x"}),
    ("POST", "/accounts/{other}/close", {"reason": "x"}),
    ("POST", "/transfers", {"from_account_id": "{own}", "to_account_id": "{other}", "amount": "1"}),
    ("POST", "/transfers", {"from_account_id": "{other}", "to_account_id": "{own}", "amount": "1"}),
    ("POST", "/transfers", {"from_account_id": "{own}", "to_account_id": "{missing}", "amount": 1}),
    ("GET", "/transfers/{transfer}", None),
    ("GET", "/admin/users", None),
    ("PATCH", "/admin/users/{bob_id}", {"roles": ["customer"]}),
]

# Expected status per endpoint (same order) for each kind of caller.
EXPECTED: dict[str, list[int]] = {
    #            create list own oth  ev  ev  tx  tx  dep dep wd  wd  cls cls  t1  t2  t3  gt adm adm  # noqa: E501
    "anonymous": [401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 401],  # noqa: E501
    "owner":     [201, 200, 200, 404, 200, 404, 200, 404, 200, 404, 200, 404, 422, 404, 201, 404, 404, 200, 403, 403],  # noqa: E501
    "target":    [201, 200, 404, 200, 404, 200, 404, 200, 404, 200, 404, 200, 404, 422, 404, 201, 404, 200, 403, 403],  # noqa: E501
    "stranger":  [201, 200, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 403, 403],  # noqa: E501
    "auditor":   [403, 200, 200, 200, 200, 200, 200, 200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 200, 403, 403],  # noqa: E501
    "admin":     [201, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 422, 422, 201, 201, 404, 200, 200, 200],  # noqa: E501
}  # fmt: skip


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


async def _open(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await http.post(
        "/accounts", json={"owner_name": "Owner", "initial_balance": "100"}, headers=headers
    )
    assert response.status_code == 201, response.text
    account_id: str = response.json()["id"]
    return account_id


async def test_every_role_against_every_endpoint(app: App) -> None:
    http, services = app
    alice = await sign_up(http, "alice")
    bob = await sign_up(http, "bob")
    callers = {
        "anonymous": {},
        "owner": alice,
        "target": bob,
        "stranger": await sign_up(http, "carol"),
        "auditor": await admin_headers(http, services, roles=("auditor",)),
        "admin": await admin_headers(http, services),
    }
    ids = {
        "own": await _open(http, alice),
        "other": await _open(http, bob),
        "missing": "00000000-0000-4000-8000-000000000000",
        "bob_id": (await http.get("/auth/me", headers=bob)).json()["id"],
    }
    transfer = await http.post(
        "/transfers",
        json={"from_account_id": ids["own"], "to_account_id": ids["other"], "amount": "1"},
        headers=alice,
    )
    assert transfer.status_code == 201, transfer.text
    ids["transfer"] = transfer.json()["id"]

    mismatches = []
    for role, statuses in EXPECTED.items():
        assert len(statuses) == len(ENDPOINTS)
        for (method, path, body), expected in zip(ENDPOINTS, statuses, strict=True):
            response = await http.request(
                method,
                path.format(**ids),
                json=_fill(body, ids) if body is not None else None,
                headers=callers[role],
            )
            if response.status_code != expected:
                mismatches.append((role, method, path, body, expected, response.status_code))
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json"
            if response.status_code == 401:
                assert response.json()["code"] == "unauthenticated"
                assert response.headers["www-authenticate"].startswith("Bearer")
            if response.status_code == 403:
                assert response.json()["code"] == "forbidden"
    assert mismatches == []


async def test_listing_shows_a_customer_only_their_accounts(app: App) -> None:
    http, services = app
    alice, bob = await sign_up(http), await sign_up(http)
    auditor = await admin_headers(http, services, roles=("auditor",))
    own = {await _open(http, alice), await _open(http, alice)}
    other = {await _open(http, bob)}

    async def listed(headers: dict[str, str]) -> set[str]:
        response = await http.get("/accounts", params={"limit": 100}, headers=headers)
        assert response.status_code == 200
        return {a["id"] for a in response.json()["data"]}

    for _ in range(100):  # the listing reads a projection, which may lag a moment
        if await listed(auditor) >= own | other:
            break
        await asyncio.sleep(0.05)
    assert await listed(alice) == own
    assert await listed(bob) == other
    assert await listed(auditor) == own | other


async def test_writes_record_who_made_them_in_the_event_metadata(app: App) -> None:
    http, services = app
    alice = await sign_up(http)
    alice_id = (await http.get("/auth/me", headers=alice)).json()["id"]
    account = await _open(http, alice)
    await http.post(f"/accounts/{account}/deposit", json={"amount": "5"}, headers=alice)
    events = await services.store.read_stream(account, 0)
    assert [e.metadata["user_id"] for e in events] == [alice_id, alice_id]
    assert events[0].data["owner_id"] == alice_id


async def test_a_forged_or_malformed_bearer_is_401_everywhere(app: App) -> None:
    http, _ = app
    for header in ("Bearer", "Bearer not.a.jwt", "Basic dXNlcjpwYXNz", "Bearer " + "a" * 20):
        response = await http.get("/accounts", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] == "unauthenticated"
