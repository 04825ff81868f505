"""Holds through the HTTP API: place, read, list, capture and void, who may do which, and
their refusals (API.md "Holds, overdraft, freezes, statements")."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
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

from banking_es.application.context import CommandContext
from banking_es.bootstrap import Services
from banking_es.domain import commands as cmd
from banking_es.domain.holds import MAX_PENDING_HOLDS

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
HOLD_KEYS = {
    "id", "account_id", "to_account_id", "amount", "captured_amount", "currency", "status",
    "expires_at", "description", "created_at",
}  # fmt: skip


async def place(api: httpx.AsyncClient, account_id: str, amount: Any, **extra: Any) -> Any:
    return await api.post(f"/accounts/{account_id}/holds", json={"amount": amount, **extra})


async def placed(api: httpx.AsyncClient, account_id: str, amount: Any, **extra: Any) -> Any:
    response = await place(api, account_id, amount, **extra)
    assert response.status_code == 201, response.text
    return response.json()


async def balance(api: httpx.AsyncClient, account_id: str) -> str:
    value: str = (await api.get(f"/accounts/{account_id}")).json()["balance"]
    return value


@both_backends
async def test_place_answers_201_with_location_and_get_returns_it(api: httpx.AsyncClient) -> None:
    account = await open_account(api, "Payer", "100")

    response = await place(api, account["id"], "25.5", description="hotel", expires_in=60)

    assert response.status_code == 201, response.text
    hold = response.json()
    assert set(hold) == HOLD_KEYS
    assert str(uuid.UUID(hold["id"])) == hold["id"]
    assert response.headers["location"] == f"/holds/{hold['id']}"
    assert hold["account_id"] == account["id"]
    assert hold["to_account_id"] is None
    assert (hold["amount"], hold["captured_amount"]) == ("25.50", "0.00")
    assert (hold["status"], hold["description"]) == ("pending", "hotel")
    assert hold["expires_at"].endswith("Z")
    assert hold["created_at"].endswith("Z")
    got = await api.get(f"/holds/{hold['id']}")
    assert got.status_code == 200
    assert got.json() == hold
    assert await balance(api, account["id"]) == "100.00"  # reserved, not yet taken


@both_backends
async def test_capture_to_another_account_moves_part_and_releases_the_rest(
    api: httpx.AsyncClient,
) -> None:
    source = await open_account(api, "Payer", "100")
    target = await open_account(api, "Payee", "0")
    hold = await placed(api, source["id"], "40", to_account_id=target["id"])

    response = await api.post(f"/holds/{hold['id']}/capture", json={"amount": "30"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["captured_amount"], body["amount"]) == (
        "captured",
        "30.00",
        "40.00",
    )
    assert await balance(api, source["id"]) == "70.00"
    assert await balance(api, target["id"]) == "30.00"
    again = await api.post(f"/holds/{hold['id']}/capture")
    assert_problem(again, 409, "hold_not_pending")


@both_backends
async def test_capture_without_a_body_takes_all(api: httpx.AsyncClient) -> None:
    account = await open_account(api, "Payer", "100")
    hold = await placed(api, account["id"], "12.34")

    response = await api.post(f"/holds/{hold['id']}/capture")

    assert response.status_code == 200, response.text
    assert response.json()["captured_amount"] == "12.34"
    assert await balance(api, account["id"]) == "87.66"


@both_backends
async def test_void_releases_the_hold_and_then_refuses_a_second_settlement(
    api: httpx.AsyncClient,
) -> None:
    account = await open_account(api, "Payer", "100")
    hold = await placed(api, account["id"], "90")
    assert_problem(await place(api, account["id"], "20"), 422, "insufficient_funds")

    response = await api.post(f"/holds/{hold['id']}/void")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "voided"
    assert response.json()["captured_amount"] == "0.00"
    assert_problem(await api.post(f"/holds/{hold['id']}/capture"), 409, "hold_not_pending")
    assert_problem(await api.post(f"/holds/{hold['id']}/void", json={}), 409, "hold_not_pending")
    assert (await place(api, account["id"], "100")).status_code == 201  # available again
    assert await balance(api, account["id"]) == "100.00"


@both_backends
async def test_capture_beyond_the_hold_is_422_and_changes_nothing(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, "Payer", "100")
    hold = await placed(api, account["id"], "10")
    before = await snapshot_store(services)

    response = await api.post(f"/holds/{hold['id']}/capture", json={"amount": "10.01"})

    assert_problem(response, 422, "amount_exceeds_hold")
    assert await snapshot_store(services) == before


@both_backends
async def test_hold_refusals_of_the_domain(api: httpx.AsyncClient, services: Services) -> None:
    account = await open_account(api, "Payer", "10")
    euros = await open_account(api, "Euro", "0", currency="EUR")
    assert_problem(await place(api, account["id"], "10.01"), 422, "insufficient_funds")
    assert_problem(
        await place(api, account["id"], "1", to_account_id=euros["id"]), 422, "currency_mismatch"
    )
    assert_problem(
        await place(api, account["id"], "1", to_account_id=account["id"]), 400, "same_account"
    )
    unknown = str(uuid.uuid4())
    assert_problem(await place(api, account["id"], "1", to_account_id=unknown), 404, "not_found")
    await services.accounts.freeze_account(
        cmd.FreezeAccount(account["id"], "fraud check"), CommandContext()
    )
    assert_problem(await place(api, account["id"], "1"), 409, "account_frozen")
    empty = await open_account(api, "Closed", "0")
    assert (await api.post(f"/accounts/{empty['id']}/close", json={})).status_code == 200
    assert_problem(await place(api, empty["id"], "1"), 409, "account_closed")


@both_backends
async def test_a_capture_is_refused_once_the_destination_closed_the_source_froze_or_it_expired(
    api: httpx.AsyncClient, services: Services
) -> None:
    source = await open_account(api, "Payer", "100")
    target = await open_account(api, "Payee", "0")
    to_closed = await placed(api, source["id"], "5", to_account_id=target["id"])
    assert (await api.post(f"/accounts/{target['id']}/close", json={})).status_code == 200
    assert_problem(await api.post(f"/holds/{to_closed['id']}/capture"), 409, "account_closed")

    expiring = await placed(api, source["id"], "6", expires_in=1)
    await asyncio.sleep(1.1)  # past its expiry, whether or not the expiry job ran
    assert_problem(await api.post(f"/holds/{expiring['id']}/capture"), 409, "hold_not_pending")

    frozen_out = await placed(api, source["id"], "7")
    async with api_client(services, role="admin") as admin:
        freeze = await admin.post(f"/admin/accounts/{source['id']}/freeze", json={"reason": "kyc"})
        assert freeze.status_code == 200, freeze.text
    assert_problem(await api.post(f"/holds/{frozen_out['id']}/capture"), 409, "account_frozen")
    assert await balance(api, source["id"]) == "100.00"
    assert (await api.get(f"/accounts/{source['id']}")).json()["available"] == "88.00"


@both_backends
async def test_closing_an_account_with_a_pending_hold_is_422_holds_pending(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, "Payer", "0")
    # an overdraft lets a zero balance carry a hold
    await services.accounts.set_overdraft_limit(
        cmd.SetOverdraftLimit(account["id"], Decimal("10")), CommandContext()
    )
    hold = await placed(api, account["id"], "5")
    close = f"/accounts/{account['id']}/close"

    assert_problem(await api.post(close, json={}), 422, "holds_pending")
    assert (await api.post(f"/holds/{hold['id']}/void")).status_code == 200
    assert (await api.post(close, json={})).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "-1"}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": "1" * 40}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "1.001"}, "amount"),
        ({}, "amount"),
        ({"amount": 1, "expires_in": 0}, "expires_in"),
        ({"amount": 1, "expires_in": 2_592_001}, "expires_in"),
        ({"amount": 1, "expires_in": "60"}, "expires_in"),
        ({"amount": 1, "expires_in": 10**30}, "expires_in"),
        ({"amount": 1, "expires_in": 1.5}, "expires_in"),
        ({"amount": 1, "to_account_id": "nope"}, "to_account_id"),
        ({"amount": 1, "description": "x" * 501}, "description"),
        ({"amount": 1, "colour": "red"}, "colour"),
    ],
)
async def test_bad_hold_input_is_400_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    account = await open_account(api, "Payer", "100")

    response = await api.post(f"/accounts/{account['id']}/holds", json=body)

    problem = assert_problem(response, 400, "validation_error")
    assert field in [p["field"] for p in problem["errors"]], problem


async def test_bad_capture_input_and_ids(api: httpx.AsyncClient) -> None:
    account = await open_account(api, "Payer", "100")
    hold = await placed(api, account["id"], "10")
    for body in ({"amount": "-1"}, {"amount": "x"}, {"amount": 10**40}, {"extra": 1}):
        response = await api.post(f"/holds/{hold['id']}/capture", json=body)
        assert_problem(response, 400, "validation_error")
    voided = await api.post(f"/holds/{hold['id']}/void", json={"a": 1})
    assert_problem(voided, 400, "validation_error")
    assert_problem(await api.get("/holds/not-a-uuid"), 400, "validation_error")
    assert_problem(await api.post("/holds/not-a-uuid/capture"), 400, "validation_error")
    missing = str(uuid.uuid4())
    assert_problem(await api.get(f"/holds/{missing}"), 404, "not_found")
    assert_problem(await api.post(f"/holds/{missing}/capture"), 404, "not_found")
    assert_problem(await api.post(f"/holds/{missing}/void"), 404, "not_found")
    assert_problem(await place(api, missing, "1"), 404, "not_found")
    # a transfer's id is an event id too, but not a hold's
    other = await open_account(api, "Other", "0")
    moved = await api.post(
        "/transfers",
        json={"from_account_id": account["id"], "to_account_id": other["id"], "amount": 1},
    )
    assert_problem(await api.get(f"/holds/{moved.json()['id']}"), 404, "not_found")


@both_backends
async def test_who_may_read_capture_and_void(api: httpx.AsyncClient, services: Services) -> None:
    source = await open_account(api, "Payer", "100")
    async with (
        api_client(services) as payee,
        api_client(services) as stranger,
        api_client(services, role="auditor") as auditor,
        api_client(services, role="admin") as admin,
    ):
        target = await open_account(payee, "Payee", "0")
        first = await placed(api, source["id"], "10", to_account_id=target["id"])
        second = await placed(api, source["id"], "10", to_account_id=target["id"])
        path = f"/holds/{first['id']}"

        # reads: both owners, auditors and admins; a stranger learns nothing
        for client in (api, payee, auditor, admin):
            assert (await client.get(path)).status_code == 200
        assert_problem(await stranger.get(path), 404, "not_found")
        assert_problem(await place(stranger, source["id"], "1"), 404, "not_found")
        assert_problem(await stranger.get(f"/accounts/{source['id']}/holds"), 404, "not_found")
        # writes: a stranger 404, an auditor 403, the payee may capture but not void
        assert_problem(await stranger.post(f"{path}/capture"), 404, "not_found")
        assert_problem(await stranger.post(f"{path}/void"), 404, "not_found")
        assert_problem(await auditor.post(f"{path}/capture"), 403, "forbidden")
        assert_problem(await auditor.post(f"{path}/void"), 403, "forbidden")
        assert_problem(await place(auditor, source["id"], "1"), 403, "forbidden")
        assert_problem(await payee.post(f"{path}/void"), 403, "forbidden")
        assert_problem(await place(payee, source["id"], "1"), 404, "not_found")
        captured = await payee.post(f"{path}/capture", json={"amount": 4})
        assert captured.status_code == 200, captured.text
        assert captured.json()["status"] == "captured"
        assert await balance(payee, target["id"]) == "4.00"
        # an admin places, voids and captures anybody's
        voided = await admin.post(f"/holds/{second['id']}/void")
        assert voided.status_code == 200, voided.text
        third = await placed(admin, source["id"], "1")
        assert (await admin.post(f"/holds/{third['id']}/capture")).status_code == 200
        assert await balance(api, source["id"]) == "95.00"


@both_backends
async def test_idempotent_place_and_capture_replay_the_first_answer(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, "Payer", "100")
    path = f"/accounts/{account['id']}/holds"
    headers = {"Idempotency-Key": f"hold-{uuid.uuid4()}"}

    first = await api.post(path, json={"amount": "10"}, headers=headers)
    before = await snapshot_store(services)
    again = await api.post(path, json={"amount": "10"}, headers=headers)

    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await snapshot_store(services) == before
    reused = await api.post(path, json={"amount": "11"}, headers=headers)
    assert_problem(reused, 422, "idempotency_key_reused")

    capture = f"/holds/{first.json()['id']}/capture"
    key = {"Idempotency-Key": f"capture-{uuid.uuid4()}"}
    captured = await api.post(capture, headers=key)
    replayed = await api.post(capture, headers=key)
    assert captured.status_code == replayed.status_code == 200
    assert replayed.json() == captured.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    refused_key = {"Idempotency-Key": f"void-{uuid.uuid4()}"}
    refused = await api.post(f"/holds/{first.json()['id']}/void", headers=refused_key)
    assert_problem(refused, 409, "hold_not_pending")
    refused_again = await api.post(f"/holds/{first.json()['id']}/void", headers=refused_key)
    assert_problem(refused_again, 409, "hold_not_pending")
    assert refused_again.headers["idempotent-replayed"] == "true"


async def test_list_pages_newest_first_and_filters_by_status(api: httpx.AsyncClient) -> None:
    account = await open_account(api, "Payer", "100")
    ids = [(await placed(api, account["id"], n))["id"] for n in range(1, 6)]
    await api.post(f"/holds/{ids[1]}/void")
    path = f"/accounts/{account['id']}/holds"

    first = (await api.get(path, params={"limit": 2})).json()
    assert [h["id"] for h in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    await placed(api, account["id"], 1)  # placed meanwhile: the cursor does not shift
    rest = (await api.get(path, params={"limit": 10, "cursor": first["next_cursor"]})).json()
    assert [h["id"] for h in rest["data"]] == ids[::-1][2:]
    assert (rest["has_more"], rest["next_cursor"]) == (False, None)
    voided = (await api.get(path, params={"status": "voided"})).json()
    assert [h["id"] for h in voided["data"]] == [ids[1]]
    for bad in ({"status": "gone"}, {"limit": 0}, {"limit": 101}, {"limit": "x"}):
        assert_problem(await api.get(path, params=bad), 400, "validation_error")
    assert_problem(await api.get(path, params={"cursor": "zz"}), 400, "invalid_cursor")
    assert_problem(await api.get(f"/accounts/{uuid.uuid4()}/holds"), 404, "not_found")


@pytest.mark.postgres
@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
async def test_twenty_concurrent_captures_of_one_hold_settle_it_once(
    api: httpx.AsyncClient,
) -> None:
    source = await open_account(api, "Payer", "100")
    target = await open_account(api, "Payee", "0")
    hold = await placed(api, source["id"], "30", to_account_id=target["id"])

    answers = await asyncio.gather(*(api.post(f"/holds/{hold['id']}/capture") for _ in range(20)))

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 19, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "hold_not_pending")
    assert await balance(api, source["id"]) == "70.00"
    assert await balance(api, target["id"]) == "30.00"


@both_backends
async def test_the_thousand_and_first_pending_hold_is_422_too_many_holds(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, "Payer", "100000")
    for _ in range(MAX_PENDING_HOLDS):  # through the service: the HTTP path is tested above
        await services.accounts.place_hold(
            cmd.PlaceHold(account["id"], Decimal("1")), CommandContext()
        )

    assert_problem(await place(api, account["id"], "1"), 422, "too_many_holds")
