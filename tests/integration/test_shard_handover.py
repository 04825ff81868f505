"""A shard changing hands between two instances on PostgreSQL: the commands an owner executes
raise its shards' recorded loads (also in `GET /admin/shards`), uneven loads move a shard,
the new owner starts from the recorded load and warms its cache for the shard's accounts;
a handover waits for the shard's queued commands (bounded) before releasing it, routing new
ones away meanwhile."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.api_support import app_client
from tests.auth import admin_headers
from tests.integration.shard_instances import (
    CTX,
    TTL,
    URLS,
    deposit,
    manager,
    open_on,
    two_instances,
)

from banking_es.application.errors import ServiceUnavailable
from banking_es.bootstrap import Services
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.eventstore.base import AppendRequest, RecordedEvent

pytestmark = pytest.mark.postgres

DEPOSITS = 40


async def _summarized(services: Services, account_id: str) -> None:
    """Wait until the projections list the account (what cache warming reads)."""
    for _ in range(600):  # generous: a busy machine slows the projections
        if await services.db.fetchval(
            "SELECT count(*) FROM account_summaries WHERE account_id = $1", account_id
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{account_id} never reached account_summaries")


async def _warmed(services: Services, account_id: str) -> None:
    """Wait (bounded) until the background warming has put the account in the cache."""
    for _ in range(400):
        if services.cache.version_of(account_id) is not None:
            return
        await asyncio.sleep(0.05)


async def test_loads_from_commands_move_a_shard_whose_new_owner_warms_its_accounts(
    tmp_path: Path, pg_url: str
) -> None:
    async with two_instances(tmp_path, pg_url) as (a, b):
        ma, mb = manager(a), manager(b)
        assert len(ma.owned) == len(mb.owned) == 8
        first = await open_on(a, a)
        second = await open_on(a, a, exclude={ma.shard_of(first)})
        hot = {ma.shard_of(first): first, ma.shard_of(second): second}
        for account_id in hot.values():
            await asyncio.gather(*(deposit(a.accounts, account_id) for _ in range(DEPOSITS)))
        await ma.step()
        await mb.step()
        loads = {s.shard: s.load for s in await ma.leases.states()}
        for shard in hot:  # the deposits and the opening(s), per second over a minute
            assert 0.9 * (DEPOSITS + 1) / 60 <= loads[shard] < 2 * (DEPOSITS + 1) / 60
        assert all(loads[shard] == 0 for shard in mb.owned)  # b executed nothing

        async with app_client(a) as http:
            headers = await admin_headers(http, a, ("auditor",))
            report = (await http.get("/admin/shards", headers=headers)).json()
        shown = {s["shard"]: s["load"] for s in report["shards"]}
        assert all(shown[shard] == pytest.approx(loads[shard]) for shard in hot)

        moves = await ma.rebalance()  # a carries all the load, b none: one hot shard moves
        assert [(m.source, m.target) for m in moves] == [("a", "b")], moves
        moved = moves[0].shard
        assert moved in hot
        account_id = hot[moved]
        await _summarized(b, account_id)
        await ma.step()  # a hands it over
        await mb.step()  # b takes it
        assert moved in mb.owned
        assert moved not in ma.owned
        assert mb.loads.rate(moved) == pytest.approx(loads[moved], rel=0.1)
        await _warmed(b, account_id)
        assert b.cache.version_of(account_id) == DEPOSITS + 1
        other = next(acc for shard, acc in hot.items() if shard != moved)
        assert b.cache.version_of(other) is None  # only the taken shard's accounts
        done = await deposit(b.accounts, account_id)
        assert done.version == DEPOSITS + 2
        await mb.step()
        assert mb.loads.rate(moved) > loads[moved] * 0.9


async def test_the_survivor_warms_its_cache_for_the_shards_it_takes_over(
    tmp_path: Path, pg_url: str
) -> None:
    async with two_instances(tmp_path, pg_url) as (a, b):
        ma, mb = manager(a), manager(b)
        theirs = await open_on(a, a)
        await deposit(a.accounts, theirs)
        await _summarized(b, theirs)
        await ma.stop()  # a leaves: its shards are free for b at its next step
        await mb.step()
        assert sorted(mb.owned) == list(range(16))
        await _warmed(b, theirs)
        assert b.cache.version_of(theirs) == 2
        assert b.cache_warmer is not None
        assert b.cache_warmer.status()["state"] == "done"


class _Gate:
    """Holds every append of the account service until opened: commands stay in flight."""

    def __init__(self, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = asyncio.Event()
        self.waiting = 0
        self._store = services.store
        monkeypatch.setattr(services.accounts._repository, "store", self)

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        self.waiting += 1
        await self.open.wait()
        return await self._store.append(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def _handing_over(
    a: Services, monkeypatch: pytest.MonkeyPatch, count: int
) -> tuple[str, int, _Gate, list[asyncio.Task[Account]]]:
    """An account on `a` with `count` deposits in flight, held at the store's gate (the first
    chunk at the store, the others queued behind it), and its shard asked to move to b."""
    ma = manager(a)
    account_id = await open_on(a, a)
    shard = ma.shard_of(account_id)
    gate = _Gate(a, monkeypatch)
    deposits = [asyncio.create_task(deposit(a.accounts, account_id)) for _ in range(count)]
    while not gate.waiting:
        await asyncio.sleep(0.01)
    assert await ma.leases.hand_over(shard, "b")
    return account_id, shard, gate, deposits


async def test_a_handover_waits_for_the_shards_queued_commands_and_routes_new_ones_away(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_instances(tmp_path, pg_url) as (a, b):
        ma, mb = manager(a), manager(b)
        account_id, shard, gate, deposits = await _handing_over(a, monkeypatch, 20)
        handing = asyncio.create_task(ma.step())
        await asyncio.sleep(TTL / 6)
        assert not handing.done()  # draining
        assert ma.route(shard) == URLS["b"]  # new commands go to b
        assert not ma.owns(account_id)
        assert ma.fence_for(account_id) is not None  # those in flight keep their fence
        states = {s.shard: s for s in await ma.leases.states()}
        assert (states[shard].owner, states[shard].handover_to) == ("a", "b")  # not released
        gate.open.set()
        await handing
        done = await asyncio.gather(*deposits)  # all 20 applied, none refused
        assert max(d.version for d in done) == 21
        states = {s.shard: s for s in await ma.leases.states()}
        assert states[shard].owner is None
        assert ma.fence_for(account_id) is None
        with pytest.raises(ServiceUnavailable):  # the shard is b's now: no write here
            await a.accounts.deposit(cmd.Deposit(account_id, Decimal("1")), CTX)
        await mb.step()
        assert shard in mb.owned
        after = await deposit(b.accounts, account_id)
        assert (after.version, after.balance) == (22, Decimal("121"))


async def test_a_drain_that_does_not_end_is_cut_short_and_its_commands_are_refused(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_instances(tmp_path, pg_url) as (a, b):
        ma, mb = manager(a), manager(b)
        account_id, shard, gate, deposits = await _handing_over(a, monkeypatch, 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ma.step()
        assert loop.time() - started < TTL / 3 + 1.0  # bounded by a third of the ttl
        await mb.step()
        assert shard in mb.owned  # taken: the commands still in flight carry an old epoch
        gate.open.set()
        outcomes = await asyncio.gather(*deposits, return_exceptions=True)
        assert all(isinstance(o, ServiceUnavailable) for o in outcomes), outcomes
        account = await b.accounts.get_account(account_id)
        assert isinstance(account, Account)
        assert (account.version, account.balance) == (1, Decimal("100"))  # none applied
