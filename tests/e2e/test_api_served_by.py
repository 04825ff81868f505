"""One instance (no `INSTANCE_URL`) owns every shard, and its command answers say so as API.md
asks of every instance: `x-shard` (the account's; a transfer's source's; a hold's account's)
and `x-served-by` (the instance id `GET /admin/shards` names). Reads carry neither."""

from __future__ import annotations

import httpx
from tests.e2e.http_support import log_in_new_user, open_account

from banking_es.bootstrap import Services
from banking_es.shards.keys import shard_of


def marks(answer: httpx.Response) -> tuple[str | None, str | None]:
    return answer.headers.get("x-shard"), answer.headers.get("x-served-by")


async def test_one_instance_marks_every_command_with_its_shard_and_itself(
    api: httpx.AsyncClient, services: Services
) -> None:
    me = services.settings.effective_instance_id
    payer, payee = await open_account(api, "Payer", "100"), await open_account(api, "Payee", "0")

    def mine(account: dict[str, str]) -> tuple[str, str]:
        return str(shard_of(account["id"], services.settings.shard_count)), me

    deposited = await api.post(f"/accounts/{payer['id']}/deposit", json={"amount": "5"})
    assert deposited.status_code == 200, deposited.text
    assert marks(deposited) == mine(payer)
    withdrawn = await api.post(f"/accounts/{payee['id']}/withdraw", json={"amount": "1"})
    assert withdrawn.status_code == 422, withdrawn.text  # refused, still executed here
    assert marks(withdrawn) == mine(payee)

    moved = await api.post(
        "/transfers",
        json={"from_account_id": payee["id"], "to_account_id": payer["id"], "amount": "1"},
    )
    assert moved.status_code == 422, moved.text
    assert marks(moved) == mine(payee)  # the source's shard
    sent = await api.post(
        "/transfers",
        json={"from_account_id": payer["id"], "to_account_id": payee["id"], "amount": "2"},
    )
    assert sent.status_code == 201, sent.text
    assert marks(sent) == mine(payer)

    placed = await api.post(f"/accounts/{payer['id']}/holds", json={"amount": "3"})
    assert placed.status_code == 201, placed.text
    assert marks(placed) == mine(payer)
    captured = await api.post(f"/holds/{placed.json()['id']}/capture", json={"amount": "1"})
    assert captured.status_code == 200, captured.text
    assert marks(captured) == mine(payer)  # the hold's id names no account: its account's

    read = await api.get(f"/accounts/{payer['id']}")
    assert marks(read) == (None, None)
    unknown = await api.post("/holds/00000000-0000-4000-8000-000000000000/void")
    assert unknown.status_code == 404
    assert marks(unknown) == (None, None)  # no account to name
    bad = await api.post(
        "/transfers", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert marks(bad) == (None, None)

    admin = await log_in_new_user(api, services, "admin")
    shards = await api.get("/admin/shards", headers={"Authorization": admin})
    assert shards.status_code == 200, shards.text
    assert [i["id"] for i in shards.json()["instances"]] == [me]
