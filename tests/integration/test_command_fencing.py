"""The command path carries the shard's fence: an owner that stopped renewing (paused) while
another instance took its shards has its next command refused at the store (`FencedOut`),
drops the shard, and the client gets 503 `service_unavailable` with `Retry-After`; the new
owner's writes stand. A command for a shard the instance does not own is never written."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.api_support import app_client, running_services
from tests.auth import sign_up

from banking_es.application.context import CommandContext
from banking_es.application.errors import ServiceUnavailable
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.eventstore.base import FencedOut

pytestmark = pytest.mark.postgres

TTL = 1.0
CLUSTER: dict[str, Any] = {
    "cluster_secret": "s" * 32,
    "shard_lease_ttl": TTL,
    "shard_count": 4,
}


def _instance(name: str, port: int) -> dict[str, Any]:
    return {"instance_id": name, "instance_url": f"http://127.0.0.1:{port}", **CLUSTER}


async def test_a_paused_owners_command_is_refused_at_the_store_and_answers_503(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_services(tmp_path / "a", pg_url, **_instance("a", 3901)) as a:
        assert a.sharding is not None
        stale = a.sharding.manager
        assert sorted(stale.owned) == [0, 1, 2, 3]
        async with app_client(a) as http:
            headers = await sign_up(http)
            opened = await http.post(
                "/accounts", json={"owner_name": "Ann", "initial_balance": "10.00"}, headers=headers
            )
            assert opened.status_code == 201, opened.text
            account_id = opened.json()["id"]
            shard = stale.shard_of(account_id)
            epoch = stale.owned[shard].epoch
            # "a" pauses: no more renewals; its leases lapse and "b" takes every shard.
            assert stale._task is not None
            stale._task.cancel()
            await asyncio.sleep(TTL + 0.2)
            async with running_services(tmp_path / "b", pg_url, **_instance("b", 3902)) as b:
                assert b.sharding is not None
                assert sorted(b.sharding.manager.owned) == [0, 1, 2, 3]
                assert b.sharding.manager.owned[shard].epoch == epoch + 1
                # "a" still believes it owns the shard: the store is what refuses it.
                assert shard in stale.owned
                stored: list[BaseException] = []
                original = a.store.append

                async def watched(request: Any) -> Any:
                    try:
                        return await original(request)
                    except FencedOut as exc:
                        stored.append(exc)
                        raise

                a.store.append = watched  # type: ignore[method-assign]
                refused = await http.post(
                    f"/accounts/{account_id}/deposit", json={"amount": "5.00"}, headers=headers
                )
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "service_unavailable"
                assert refused.headers["retry-after"]
                assert [(e.shard, e.epoch) for e in stored] == [(shard, epoch)]
                assert shard not in stale.owned  # dropped on FencedOut
                # Asked again, "a" refuses before the store: the shard is not its own.
                with pytest.raises(ServiceUnavailable):
                    await a.accounts.deposit(
                        cmd.Deposit(account_id, Decimal("1.00")), CommandContext()
                    )
                assert len(stored) == 1
                # The new owner writes; nothing of "a" landed.
                done = await b.accounts.deposit(
                    cmd.Deposit(account_id, Decimal("2.00")), CommandContext()
                )
                assert isinstance(done, Account)
                assert done.balance == Decimal("12.00")
                assert done.version == 2
