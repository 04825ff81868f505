"""The shard map on SQLite and PostgreSQL: the stored shard count, claims with growing
epochs, renewals and releases judged by the database's clock, a cold start of concurrent
claimers that ends with one owner per shard, the shards recently moved (a handover taken, not
an orphan), and the registry of instances (one that stops calls off the moves to it)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from tests.conftest import DatabaseOpener
from tests.contract.eventstore_helpers import SQL_BACKENDS

from banking_es.db.migrate import migrate
from banking_es.shards.leases import ShardCountMismatch, ShardLeases

pytestmark = pytest.mark.parametrize("backend", SQL_BACKENDS)

COUNT = 16


async def _leases(open_database: DatabaseOpener, ttl: float = 10.0) -> ShardLeases:
    db = await open_database()
    await migrate(db)
    leases = ShardLeases(db, ttl=ttl)
    await leases.ensure_shard_count(COUNT)
    return leases


async def test_the_shard_count_is_stored_once_and_another_is_refused(
    open_database: DatabaseOpener,
) -> None:
    leases = await _leases(open_database)
    await leases.ensure_shard_count(COUNT)  # the same again: fine
    assert await leases.shard_count() == COUNT
    with pytest.raises(ShardCountMismatch) as refused:
        await leases.ensure_shard_count(32)
    assert str(refused.value) == (
        "SHARD_COUNT is 32 but this database was set up with 16 shards; start with SHARD_COUNT=16"
    )
    assert len(await leases.states()) == COUNT


async def test_each_claim_takes_the_next_epoch_and_excludes_others(
    open_database: DatabaseOpener,
) -> None:
    leases = await _leases(open_database)
    first = await leases.claim(3, "a")
    assert first is not None
    assert (first.owner, first.epoch) == ("a", 1)
    assert await leases.claim(3, "b") is None  # held and not expired
    assert await leases.release(first)
    second = await leases.claim(3, "b")
    assert second is not None
    assert second.epoch == 2
    assert await leases.renew(first) is None  # the old term cannot renew
    assert not await leases.release(first)  # nor release the new owner's lease
    renewed = await leases.renew(second, load=12.5)
    assert renewed is not None
    assert renewed.expires_at >= second.expires_at
    state = (await leases.states())[3]
    assert (state.status, state.owner, state.epoch, state.load) == ("assigned", "b", 2, 12.5)


async def test_an_expired_lease_is_failed_until_another_claims_it(
    open_database: DatabaseOpener,
) -> None:
    leases = await _leases(open_database, ttl=0.3)
    lease = await leases.claim(5, "a")
    assert lease is not None
    await asyncio.sleep(0.5)
    assert (await leases.states())[5].status == "failed"
    taken = await leases.claim(5, "b")
    assert taken is not None
    assert taken.epoch == lease.epoch + 1
    assert (await leases.states())[5].status == "assigned"


async def test_a_handover_reserves_the_shard_for_its_target(
    open_database: DatabaseOpener,
) -> None:
    leases = await _leases(open_database)
    lease = await leases.claim(7, "a")
    assert lease is not None
    assert not await leases.hand_over(7, "b")  # b is no live instance: it could not take it
    assert (await leases.states())[7].handover_to is None
    await leases.register("b", "http://127.0.0.1:3002")
    assert await leases.hand_over(7, "b")
    renewed = await leases.renew(lease)
    assert renewed is not None
    assert renewed.handover_to == "b"
    assert (await leases.states())[7].status == "rebalancing"
    assert await leases.release(renewed)
    assert await leases.claim(7, "c") is None  # reserved for b
    free = await leases.claim_free("c", COUNT)
    assert [lease.shard for lease in free] == [s for s in range(COUNT) if s != 7]
    taken = await leases.claim(7, "b")
    assert taken is not None
    assert (taken.owner, taken.epoch, taken.handover_to) == ("b", 2, None)


async def test_only_a_handover_taken_counts_as_a_recent_move_and_only_for_a_while(
    open_database: DatabaseOpener,
) -> None:
    leases = await _leases(open_database)
    moved, freed = await leases.claim(1, "a"), await leases.claim(2, "a")
    assert moved is not None
    assert freed is not None
    assert await leases.claim(3, "a") is not None
    assert await leases.release(freed)  # a stop: the shard is free, taken as an orphan
    assert await leases.claim(2, "b") is not None
    assert await leases.claim(3, "a") is not None  # a restart with the same id
    await leases.register("b", "http://127.0.0.1:3002")
    assert await leases.hand_over(1, "b")
    handing = await leases.renew(moved)
    assert handing is not None
    assert await leases.release(handing)
    assert await leases.moved_within(60) == set()  # handed over, not yet taken
    assert await leases.claim(1, "b") is not None
    assert await leases.moved_within(60) == {1}
    await asyncio.sleep(0.4)
    assert await leases.moved_within(0.3) == set()  # by the database's clock
    assert await leases.moved_within(60) == {1}


async def test_a_stopping_instance_calls_off_the_moves_to_it(
    open_database: DatabaseOpener,
) -> None:
    leases = await _leases(open_database)
    for instance in ("a", "b", "z"):
        await leases.register(instance, f"http://{instance}")
    released, draining = await leases.claim(4, "a"), await leases.claim(5, "a")
    orphaned = await leases.claim(6, "z")
    assert released is not None
    assert draining is not None
    assert orphaned is not None
    for shard in (4, 5, 6):
        assert await leases.hand_over(shard, "b")
    for lease in (released, orphaned):
        handing = await leases.renew(lease)
        assert handing is not None
        assert await leases.release(handing)  # reserved for b for one ttl
    await leases.leave("z")  # z released shard 6 for b, then stopped itself
    await leases.leave("b")
    states = await leases.states()
    # Released by a, which is alive: back to a, not to whoever claims first.
    assert (states[4].status, states[4].owner, states[4].handover_to) == ("rebalancing", None, "a")
    assert await leases.claim(4, "c") is None
    back = await leases.claim(4, "a")
    assert back is not None
    assert (back.owner, back.epoch, back.handover_to) == ("a", released.epoch + 1, None)
    # Not yet released: it stays with its owner, the move forgotten.
    assert (states[5].status, states[5].owner, states[5].handover_to) == ("assigned", "a", None)
    # Released by an instance that is gone too: free at once, not after the ttl.
    assert (states[6].status, states[6].handover_to) == ("available", None)
    assert await leases.claim(6, "c") is not None
    # A rebalancer that saw b alive just before it left cannot hand it a shard now.
    assert not await leases.hand_over(5, "b")
    assert (await leases.states())[5].handover_to is None


async def test_a_cold_start_of_concurrent_claimers_gives_each_shard_one_owner(
    open_database: DatabaseOpener,
) -> None:
    await _leases(open_database)
    claimers = [ShardLeases(await open_database(), ttl=10.0) for _ in range(4)]
    rounds = await asyncio.gather(
        *(leases.claim_free(f"instance-{i}", COUNT) for i, leases in enumerate(claimers))
    )
    claimed = Counter(lease.shard for leases in rounds for lease in leases)
    assert sorted(claimed) == list(range(COUNT))
    assert set(claimed.values()) == {1}
    states = await claimers[0].states()
    assert {s.epoch for s in states} == {1}
    owners = {lease.shard: lease.owner for leases in rounds for lease in leases}
    assert {s.shard: s.owner for s in states} == owners


async def test_concurrent_claims_of_one_shard_have_one_winner(
    open_database: DatabaseOpener,
) -> None:
    await _leases(open_database)
    claimers = [ShardLeases(await open_database(), ttl=10.0) for _ in range(4)]
    for shard in range(4):
        won = await asyncio.gather(
            *(leases.claim(shard, f"instance-{i}") for i, leases in enumerate(claimers))
        )
        assert len([lease for lease in won if lease is not None]) == 1


async def test_instances_are_alive_while_seen_within_a_ttl(
    open_database: DatabaseOpener,
) -> None:
    leases = await _leases(open_database, ttl=0.4)
    await leases.register("a", "http://127.0.0.1:3001")
    await leases.register("b", "http://127.0.0.1:3002")
    await asyncio.sleep(0.6)
    await leases.register("b", "http://127.0.0.1:3002")
    seen = {i.id: i for i in await leases.instances()}
    assert (seen["a"].alive, seen["b"].alive) == (False, True)
    assert seen["b"].last_seen > seen["b"].started_at
    await leases.leave("b")
    assert not any(i.alive for i in await leases.instances())


async def test_the_report_shows_each_shard_and_the_instances_holding_them(
    open_database: DatabaseOpener,
) -> None:
    from banking_es.shards.report import shard_report

    leases = await _leases(open_database, ttl=1.0)
    await leases.register("b", "http://127.0.0.1:3002")
    assert await leases.claim(0, "b") is not None
    await asyncio.sleep(1.3)  # b's lease of shard 0 lapses, and b is no longer seen
    await leases.register("a", "http://127.0.0.1:3001")
    for shard in (1, 2):
        assert await leases.claim(shard, "a") is not None
    third = await leases.claim(3, "a")
    assert third is not None
    assert await leases.renew(third, load=4.5) is not None
    assert not await leases.hand_over(2, "b")  # gone
    await leases.register("c", "http://127.0.0.1:3003")
    assert await leases.hand_over(2, "c")

    report = await shard_report(leases)

    assert report["shard_count"] == COUNT
    assert [s["status"] for s in report["shards"][:5]] == [
        "failed", "assigned", "rebalancing", "assigned", "available",
    ]  # fmt: skip
    assert report["shards"][3] == {
        "shard": 3, "status": "assigned", "owner": "a", "epoch": 1, "load": 4.5,
    }  # fmt: skip
    instances = {i["id"]: i for i in report["instances"]}
    assert (instances["a"]["shards"], instances["a"]["status"]) == ([1, 2, 3], "alive")
    assert (instances["b"]["shards"], instances["b"]["status"]) == ([], "gone")
    assert instances["a"]["last_seen"].endswith("Z")
