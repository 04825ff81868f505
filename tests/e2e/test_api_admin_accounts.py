"""/admin/accounts (API.md): overdraft limits and freezes, set by admins, on both backends.

The customer's own client is `api`; admins and auditors log in through `api_client`.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import (
    api_client,
    assert_problem,
    both_backends,
    deposit,
    open_account,
    wait_for_projections,
    withdraw,
)

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import Services
from banking_es.domain import commands as cmd


async def _events(client: httpx.AsyncClient, account_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/accounts/{account_id}/events", params={"limit": 100})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


@both_backends
async def test_an_overdraft_limit_lets_debits_go_down_to_minus_it(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="10.00")
    assert (account["available"], account["overdraft_limit"]) == ("10.00", "0.00")
    path = f"/admin/accounts/{account['id']}"
    async with api_client(services, role="admin") as admin:
        response = await admin.patch(path, json={"overdraft_limit": "50"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["overdraft_limit"], body["available"], body["balance"]) == (
            "50.00",
            "60.00",
            "10.00",
        )
        assert body["version"] == 2
        again = await admin.patch(path, json={"overdraft_limit": 50})
        assert again.json()["version"] == 2  # the same limit: no event
        admin_id = (await admin.get("/auth/me")).json()["id"]

    assert (await withdraw(api, account["id"], "60.00"))["balance"] == "-50.00"
    refused = await api.post(f"/accounts/{account['id']}/withdraw", json={"amount": "0.01"})
    assert_problem(refused, 422, "insufficient_funds")
    held = await api.post(f"/accounts/{account['id']}/holds", json={"amount": "0.01"})
    assert_problem(held, 422, "insufficient_funds")
    other = await open_account(api, "Other", "0")
    out = {"from_account_id": account["id"], "to_account_id": other["id"], "amount": "0.01"}
    assert_problem(await api.post("/transfers", json=out), 422, "insufficient_funds")
    shown = (await api.get(f"/accounts/{account['id']}")).json()
    assert (shown["balance"], shown["available"], shown["overdraft_limit"]) == (
        "-50.00",
        "0.00",
        "50.00",
    )
    [limit_set] = [e for e in await _events(api, account["id"]) if e["type"] == "OverdraftLimitSet"]
    assert limit_set["data"] == {"limit": "50.00", "set_by": admin_id}


@both_backends
async def test_lowering_the_limit_below_the_debt_only_blocks_further_debits(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0")
    path = f"/admin/accounts/{account['id']}"
    async with api_client(services, role="admin") as admin:
        assert (await admin.patch(path, json={"overdraft_limit": "100"})).status_code == 200
        await withdraw(api, account["id"], "80")
        lowered = await admin.patch(path, json={"overdraft_limit": "20.5"})
    assert lowered.status_code == 200, lowered.text
    assert (lowered.json()["available"], lowered.json()["overdraft_limit"]) == ("-59.50", "20.50")
    refused = await api.post(f"/accounts/{account['id']}/withdraw", json={"amount": 1})
    assert_problem(refused, 422, "insufficient_funds")
    assert (await deposit(api, account["id"], "10"))["balance"] == "-70.00"


@both_backends
@pytest.mark.parametrize(
    ("limit", "field_message"),
    [
        ("1.5", "whole number"),  # JPY has no minor unit
        (-1, "non-negative"),
        ("-0.01", "non-negative"),
        ("1" * 16, "integer digits"),
        (True, "number"),
        (None, "number"),
        ("", "decimal"),
        ("1e3", "decimal"),
        ([], "number"),
    ],
)
async def test_a_bad_overdraft_limit_is_400(
    api: httpx.AsyncClient, services: Services, limit: Any, field_message: str
) -> None:
    account = await open_account(api, balance="100", currency="JPY")
    async with api_client(services, role="admin") as admin:
        response = await admin.patch(
            f"/admin/accounts/{account['id']}", json={"overdraft_limit": limit}
        )
        body = assert_problem(response, 400, "validation_error")
        assert [p["field"] for p in body["errors"]] == ["overdraft_limit"]
        assert field_message in body["errors"][0]["message"], body
        shown = (await admin.get(f"/accounts/{account['id']}")).json()
    assert (shown["version"], shown["overdraft_limit"]) == (1, "0")


@both_backends
async def test_the_admin_account_routes_refuse_bad_requests(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api)
    paths = [
        ("PATCH", "/admin/accounts/{}", {"overdraft_limit": "5"}),
        ("POST", "/admin/accounts/{}/freeze", {"reason": "kyc"}),
        ("POST", "/admin/accounts/{}/unfreeze", None),
    ]
    for method, template, body in paths:
        path = template.format(account["id"])
        assert_problem(await api.request(method, path, json=body), 403, "forbidden")
        async with api_client(services, role="auditor") as auditor:
            assert_problem(await auditor.request(method, path, json=body), 403, "forbidden")
        async with api_client(services, role="admin") as admin:
            del admin.headers["Authorization"]
            assert_problem(await admin.request(method, path, json=body), 401, "unauthenticated")
        async with api_client(services, role="admin") as admin:
            unknown = template.format(uuid.uuid4())
            assert_problem(await admin.request(method, unknown, json=body), 404, "not_found")
            bad_id = template.format("not-a-uuid")
            assert_problem(await admin.request(method, bad_id, json=body), 400, "validation_error")
    async with api_client(services, role="admin") as admin:
        patch = f"/admin/accounts/{account['id']}"
        for bad in ({}, {"overdraft_limit": "1", "extra": 1}, {"limit": "1"}):
            assert_problem(await admin.patch(patch, json=bad), 400, "validation_error")
        assert_problem(
            await admin.patch(patch, content=b"[1]", headers={"content-type": "application/json"}),
            400,
            "validation_error",
        )
        assert_problem(
            await admin.patch(patch, content=b"{", headers={"content-type": "application/json"}),
            400,
            "invalid_json",
        )
        freeze = f"/admin/accounts/{account['id']}/freeze"
        for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": 5}, {"reason": "x" * 501}):
            assert_problem(await admin.post(freeze, json=bad), 400, "validation_error")
        assert (await admin.get(f"/accounts/{account['id']}")).json()["version"] == 1


@both_backends
async def test_a_frozen_account_takes_credits_but_no_debits(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="100")
    other = await open_account(api, "Other", "100")
    account_id = account["id"]
    async with api_client(services, role="admin") as admin:
        frozen = await admin.post(f"/admin/accounts/{account_id}/freeze", json={"reason": "kyc"})
        assert frozen.status_code == 200, frozen.text
        assert (frozen.json()["status"], frozen.json()["version"]) == ("frozen", 2)
        again = await admin.post(f"/admin/accounts/{account_id}/freeze", json={"reason": "aml"})
        assert (again.status_code, again.json()["version"]) == (200, 2)  # no new event
        admin_id = (await admin.get("/auth/me")).json()["id"]

        withdrawal = await api.post(f"/accounts/{account_id}/withdraw", json={"amount": 1})
        assert_problem(withdrawal, 409, "account_frozen")
        out = {"from_account_id": account_id, "to_account_id": other["id"], "amount": 1}
        assert_problem(await api.post("/transfers", json=out), 409, "account_frozen")
        into = {"from_account_id": other["id"], "to_account_id": account_id, "amount": 5}
        assert (await api.post("/transfers", json=into)).status_code == 201
        assert (await deposit(api, account_id, 10))["balance"] == "115.00"
        shown = (await api.get(f"/accounts/{account_id}")).json()
        assert (shown["status"], shown["balance"]) == ("frozen", "115.00")

        # Who froze it and why: the audit log for auditors and admins, not for the holder.
        [seen_by_customer] = [e for e in await _events(api, account_id) if "Frozen" in e["type"]]
        assert (seen_by_customer["type"], seen_by_customer["data"]) == ("AccountFrozen", {})
        [seen_by_admin] = [e for e in await _events(admin, account_id) if "Frozen" in e["type"]]
        assert seen_by_admin["data"] == {"reason": "kyc", "by": admin_id}
        async with api_client(services, role="auditor") as auditor:
            [seen] = [e for e in await _events(auditor, account_id) if "Frozen" in e["type"]]
        assert seen["data"] == {"reason": "kyc", "by": admin_id}

        thawed = await admin.post(f"/admin/accounts/{account_id}/unfreeze")
        assert thawed.status_code == 200, thawed.text
        assert thawed.json()["status"] == "open"
        repeat = await admin.post(f"/admin/accounts/{account_id}/unfreeze")
        assert repeat.json()["version"] == thawed.json()["version"]
    assert (await withdraw(api, account_id, 15))["balance"] == "100.00"
    types = [e["type"] for e in await _events(api, account_id)]
    assert types.count("AccountFrozen") == types.count("AccountUnfrozen") == 1


@both_backends
async def test_a_closed_account_cannot_be_frozen_or_given_a_limit(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="0")
    closed = await api.post(f"/accounts/{account['id']}/close", json={"reason": "done"})
    assert closed.status_code == 200, closed.text
    async with api_client(services, role="admin") as admin:
        path = f"/admin/accounts/{account['id']}"
        freeze = await admin.post(f"{path}/freeze", json={"reason": "kyc"})
        assert_problem(freeze, 409, "account_closed")
        assert_problem(await admin.post(f"{path}/unfreeze"), 409, "account_closed")
        limit = await admin.patch(path, json={"overdraft_limit": "10"})
        assert_problem(limit, 409, "account_closed")


@both_backends
async def test_every_account_answer_has_available_and_the_limit(api: httpx.AsyncClient) -> None:
    account = await open_account(api, balance="1.5", currency="BHD")
    assert (account["balance"], account["available"], account["overdraft_limit"]) == (
        "1.500",
        "1.500",
        "0.000",
    )
    at_version = (await api.get(f"/accounts/{account['id']}", params={"version": 1})).json()
    assert (at_version["available"], at_version["overdraft_limit"]) == ("1.500", "0.000")
    after = await deposit(api, account["id"], "0.25")
    assert (after["available"], after["status"]) == ("1.750", "open")


@both_backends
async def test_a_row_of_the_account_list_is_the_account_with_its_holds_limit_and_status(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="10.00")
    other = await open_account(api, balance="1.00")
    path = f"/admin/accounts/{account['id']}"
    held = await api.post(f"/accounts/{account['id']}/holds", json={"amount": "4"})
    assert held.status_code == 201, held.text
    async with api_client(services, role="admin") as admin:
        assert (await admin.patch(path, json={"overdraft_limit": "5"})).status_code == 200
        assert (await admin.post(f"{path}/freeze", json={"reason": "kyc"})).status_code == 200
    await wait_for_projections(services)
    rows = (await api.get("/accounts")).json()["data"]
    assert [row["id"] for row in rows] == [account["id"], other["id"]]
    assert rows[0] == (await api.get(f"/accounts/{account['id']}")).json()
    assert (rows[0]["available"], rows[0]["overdraft_limit"], rows[0]["status"]) == (
        "11.00",
        "5.00",
        "frozen",
    )
    assert (rows[1]["available"], rows[1]["overdraft_limit"]) == ("1.00", "0.00")


@both_backends
async def test_admin_account_changes_take_an_idempotency_key(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api)
    path = f"/admin/accounts/{account['id']}"
    async with api_client(services, role="admin") as admin:
        key = {"Idempotency-Key": "freeze-1"}
        first = await admin.post(f"{path}/freeze", json={"reason": "kyc"}, headers=key)
        # Unfrozen in between: the replay answers the stored freeze, and runs nothing.
        thawed = await admin.post(f"{path}/unfreeze", headers={"Idempotency-Key": "thaw-1"})
        again = await admin.post(f"{path}/freeze", json={"reason": "kyc"}, headers=key)
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        assert thawed.json()["status"] == "open"
        thawed_again = await admin.post(f"{path}/unfreeze", headers={"Idempotency-Key": "thaw-1"})
        assert thawed_again.headers["idempotent-replayed"] == "true"
        other = await admin.post(f"{path}/freeze", json={"reason": "aml"}, headers=key)
        assert_problem(other, 422, "idempotency_key_reused")
        shown = (await admin.get(f"/accounts/{account['id']}")).json()
    assert (shown["status"], shown["version"]) == ("open", 3)


@both_backends
async def test_available_leaves_out_a_hold_past_its_expiry(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="10.00")
    placed = cmd.PlaceHold(account["id"], Decimal("4"), expires_in=1)
    await services.accounts.place_hold(placed, CommandContext())
    held = (await api.get(f"/accounts/{account['id']}")).json()
    assert (held["balance"], held["available"]) == ("10.00", "6.00")
    await asyncio.sleep(1.1)
    now = (await api.get(f"/accounts/{account['id']}")).json()
    assert now["available"] == "10.00"  # whether or not the expiry job has run yet
    # At the hold's version, as it was then: the hold still counted.
    then = await api.get(f"/accounts/{account['id']}", params={"version": 2})
    assert then.json()["available"] == "6.00"


@both_backends
async def test_the_largest_limit_is_accepted(api: httpx.AsyncClient, services: Services) -> None:
    account = await open_account(api, balance="0", currency="KWD")
    async with api_client(services, role="admin") as admin:
        response = await admin.patch(
            f"/admin/accounts/{account['id']}", json={"overdraft_limit": "999999999999999.999"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["available"] == "999999999999999.999"
    assert (await withdraw(api, account["id"], "999999999999999.999"))["balance"] == (
        "-999999999999999.999"
    )
