"""Hold expiry with shards, two instances on PostgreSQL: each instance expires the due holds
on accounts of the shards it owns, through the fenced command path, and no others; a hold
whose shard moved before it fell due is expired by the new owner; each exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from tests.integration.shard_instances import CTX, manager, open_on, two_instances

from banking_es.application.accounts import HoldResult
from banking_es.application.errors import ServiceUnavailable
from banking_es.bootstrap import Services
from banking_es.domain import commands as cmd

pytestmark = pytest.mark.postgres


async def _hold(services: Services, account_id: str) -> str:
    placed = await services.accounts.place_hold(
        cmd.PlaceHold(account_id, Decimal("5"), expires_in=1), CTX
    )
    assert isinstance(placed, HoldResult)
    return placed.id


async def _expired(services: Services, accounts: list[str]) -> Counter[str]:
    """How many `HoldExpired` each hold of `accounts` has."""
    counts: Counter[str] = Counter()
    for account_id in accounts:
        for event in await services.store.read_stream(account_id):
            if event.type == "HoldExpired":
                counts[event.data["hold_id"]] += 1
    return counts


async def test_each_owner_expires_its_shards_holds_once_and_a_moved_shards_its_new_owner(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with two_instances(tmp_path, pg_url) as (a, b):
        ma, mb = manager(a), manager(b)
        on_a = [await open_on(a, a) for _ in range(3)]
        on_b = [await open_on(b, b) for _ in range(3)]
        moving = await open_on(a, a, exclude={ma.shard_of(x) for x in on_a})
        with pytest.raises(ServiceUnavailable):  # a hold is placed on its account's owner
            await _hold(b, on_a[0])
        holds_a = [await _hold(a, x) for x in on_a]
        holds_b = [await _hold(b, x) for x in on_b]
        moved_hold = await _hold(a, moving)
        shard = ma.shard_of(moving)
        assert await ma.leases.hand_over(shard, "b")
        await ma.step()
        await mb.step()
        assert shard in mb.owned
        assert not ma.owns(moving)
        await asyncio.sleep(1.1)  # every hold is due

        assert a.hold_expiry is not None
        assert b.hold_expiry is not None
        assert await a.hold_expiry.run_once() == len(holds_a)
        accounts = [*on_a, *on_b, moving]
        assert await _expired(a, accounts) == Counter(holds_a)  # b's left to b
        assert await b.hold_expiry.run_once() == len(holds_b) + 1
        again = await asyncio.gather(a.hold_expiry.run_once(), b.hold_expiry.run_once())
        assert again == [0, 0]
        assert await _expired(b, accounts) == Counter([*holds_a, *holds_b, moved_hold])
        settled = await b.accounts.get_hold(moved_hold)
        assert settled.status == "expired"
    # Skipped, not tried and refused: no expiry ran on an instance not owning its shard.
    assert not [r for r in caplog.records if "ExpireHold failed" in r.getMessage()]
