"""Shard managers of several instances on one PostgreSQL database (a pool and a lock
manager each, as separate processes would have): a cold start gives every shard one owner
and each instance its share; a graceful stop hands shards over at once; a dead instance's
shards are taken after the lease ttl; a joining instance gets its share through handovers; a
shard just moved stays for the cooldown whichever instance rebalances next; a paused owner's
append is refused at the store after another took its shard."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from tests.contract.eventstore_helpers import events, one

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.eventstore.base import FencedOut
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.locks.base import LockManager
from banking_es.locks.postgres import PostgresLocks
from banking_es.shards.assignment import Limits, count_band
from banking_es.shards.keys import shard_of
from banking_es.shards.leases import ShardLeases
from banking_es.shards.manager import ShardManager

pytestmark = pytest.mark.postgres

COUNT = 16
TTL = 1.0
Opener = Callable[..., Awaitable[ShardManager]]


@pytest.fixture
async def open_manager(pg_url: str) -> AsyncIterator[Opener]:
    setup = await PostgresDatabase.connect(pg_url, max_size=2)
    await migrate(setup)
    await ShardLeases(setup, ttl=TTL).ensure_shard_count(COUNT)
    opened: list[PostgresDatabase] = [setup]

    async def open_one(instance: str, rebalance_interval: float = 0) -> ShardManager:
        db = await PostgresDatabase.connect(pg_url, max_size=3)
        opened.append(db)
        return ShardManager(
            ShardLeases(db, ttl=TTL),
            LockManager(PostgresLocks(pg_url)),
            instance_id=instance,
            url=f"http://127.0.0.1/{instance}",
            shard_count=COUNT,
            limits=Limits(max_moves=4),
            rebalance_interval=rebalance_interval,
        )

    yield open_one
    for db in opened:
        await db.close()


async def _start(managers: list[ShardManager]) -> None:
    """Start them together, then step them by hand only (no background steps)."""
    await asyncio.gather(*(m.start() for m in managers))
    for manager in managers:
        assert manager._task is not None
        manager._task.cancel()


async def _owners(manager: ShardManager) -> dict[int, str | None]:
    return {s.shard: s.owner for s in await manager.leases.states() if s.status == "assigned"}


def _consistent(managers: list[ShardManager], owners: dict[int, str | None]) -> None:
    """Every shard is held by exactly one manager, the one the database names."""
    held = Counter(shard for m in managers for shard in m.owned)
    assert sorted(held) == list(range(COUNT))
    assert set(held.values()) == {1}
    for manager in managers:
        assert all(owners[shard] == manager.instance_id for shard in manager.owned)


async def test_a_cold_start_gives_each_shard_one_owner_and_each_instance_its_share(
    open_manager: Opener,
) -> None:
    managers = [await open_manager(f"i{n}") for n in range(3)]
    await _start(managers)
    try:
        for _ in range(3):
            await asyncio.gather(*(m.step() for m in managers))
        _consistent(managers, await _owners(managers[0]))
        low, high = count_band(COUNT, 3, Limits())
        assert all(low <= len(m.owned) <= high for m in managers)
        health = await managers[0].health()
        assert (health["status"], health["unowned"]) == ("ok", [])
        assert health["owned"] == sorted(managers[0].owned)
    finally:
        for manager in managers:
            await manager.stop()


async def test_a_graceful_stop_hands_its_shards_over_without_waiting_for_the_ttl(
    open_manager: Opener,
) -> None:
    managers = [await open_manager(f"i{n}") for n in range(3)]
    await _start(managers)
    leaving, staying = managers[0], managers[1:]
    given_up = set(leaving.owned)
    assert given_up
    await leaving.stop()
    for _ in range(2):  # well inside one ttl
        await asyncio.gather(*(m.step() for m in staying))
    owners = await _owners(staying[0])
    assert all(owners.get(shard) in ("i1", "i2") for shard in given_up)
    for manager in staying:
        await manager.stop()


async def test_a_dead_instances_shards_are_taken_after_its_lease_ttl(
    open_manager: Opener,
) -> None:
    managers = [await open_manager(f"i{n}") for n in range(3)]
    await _start(managers)
    dead, survivors = managers[0], managers[1:]
    # it stops renewing, as a killed process does
    lost = dead.owned
    await asyncio.sleep(TTL + 0.2)
    health = await survivors[0].health()
    assert health["status"] == "degraded"
    assert set(lost) <= set(health["unowned"])
    started = asyncio.get_running_loop().time()
    while True:
        await asyncio.gather(*(m.step() for m in survivors))
        owners = await _owners(survivors[0])
        if all(owners.get(shard) in ("i1", "i2") for shard in lost):
            break
        assert asyncio.get_running_loop().time() - started < 2 * TTL + 5
        await asyncio.sleep(TTL / 3)
    _consistent(survivors, owners)
    states = {s.shard: s for s in await survivors[0].leases.states()}
    assert all(states[shard].epoch > lease.epoch for shard, lease in lost.items())
    for manager in survivors:
        await manager.stop()


async def test_a_joining_instance_gets_its_share_through_handovers(open_manager: Opener) -> None:
    managers = [await open_manager(f"i{n}") for n in range(3)]
    await _start(managers)
    joining = await open_manager("i3")
    await _start([joining])
    managers.append(joining)
    try:
        for _ in range(6):
            await asyncio.gather(*(m.step() for m in managers))
        owners = await _owners(managers[0])
        _consistent(managers, owners)
        low, high = count_band(COUNT, 4, Limits())
        assert low <= len(joining.owned) <= high
        assert all(low <= len(m.owned) <= high for m in managers)
    finally:
        for manager in managers:
            await manager.stop()


async def _record(managers: list[ShardManager], loads: dict[int, float]) -> None:
    """Give the shards these loads where they are held, and record them with a step."""
    for manager in managers:
        for shard in manager.owned:
            manager.loads.seed(shard, loads.get(shard, 0.0))
    await asyncio.gather(*(m.step() for m in managers))


async def test_a_moved_shard_stays_for_the_cooldown_whichever_instance_rebalances(
    open_manager: Opener,
) -> None:
    # Rebalancing only when asked, past the start; its cooldown: three intervals (30 s).
    first, second = [await open_manager(f"i{n}", rebalance_interval=10) for n in range(2)]
    await _start([first, second])
    try:
        assert await first.leases.moved_within(60) == set()
        hot = min(second.owned)  # on the second, the heaviest of its shards: it moves
        await _record([first, second], dict.fromkeys(second.owned, 1.0) | {hot: 3.0})
        moves = await first.rebalance()
        assert hot in {move.shard for move in moves}, moves
        for _ in range(2):  # the handovers: drained and released, then taken
            await asyncio.gather(*(m.step() for m in [first, second]))
        assert hot in first.owned
        # Now the first is the heavier, and the hot shard its best move back; the second
        # holds the lock, with no memory of the move: the database's record keeps it.
        heavy = dict.fromkeys(first.owned, 2.0) | dict.fromkeys(second.owned, 1.0) | {hot: 3.0}
        await _record([first, second], heavy)
        again = await second.rebalance()
        assert again, "no move was due: the test proves nothing"
        assert hot not in {move.shard for move in again}, again
        assert hot in await second.leases.moved_within(30)
    finally:
        for manager in [first, second]:
            await manager.stop()


async def test_a_paused_owners_append_is_refused_after_another_took_its_shard(
    open_manager: Opener, pg_url: str
) -> None:
    paused, other = await open_manager("paused"), await open_manager("other")
    await paused.start()
    assert paused._task is not None
    paused._task.cancel()  # paused: no renewals
    account = next(f"acc-{n}" for n in range(1000) if shard_of(f"acc-{n}", COUNT) in paused.owned)
    stale = paused.fence_for(account)
    assert stale is not None
    await asyncio.sleep(TTL + 0.3)
    await other.start()
    assert stale.shard in other.owned
    db = await PostgresDatabase.connect(pg_url, max_size=2)
    store = PostgresEventStore(db)
    try:
        with pytest.raises(FencedOut) as refused:  # it wakes up and writes: refused
            await store.append(replace(one(account, 0, events(1)), fence=stale))
        paused.fenced_out(refused.value.shard, refused.value.epoch)
        assert paused.fence_for(account) is None
        fresh = other.fence_for(account)
        assert fresh is not None
        assert fresh.epoch == stale.epoch + 1
        recorded = await store.append(replace(one(account, 0, events(1)), fence=fresh))
        assert [e.version for e in recorded] == [1]
    finally:
        await store.close()
        await db.close()
        await other.stop()


async def test_a_restart_with_the_same_instance_id_takes_its_shards_back_at_once(
    open_manager: Opener,
) -> None:
    before = await open_manager("api-1")
    await before.start()
    assert before._task is not None
    before._task.cancel()  # the process ends without releasing
    held = before.owned
    assert held
    after = await open_manager("api-1")
    await after.step()
    assert set(after.owned) == set(held)
    assert all(after.owned[s].epoch == lease.epoch + 1 for s, lease in held.items())
    await after.stop()


async def test_running_in_the_background_the_managers_keep_their_shares(
    open_manager: Opener,
) -> None:
    managers = [await open_manager(f"i{n}") for n in range(2)]
    await asyncio.gather(*(m.start() for m in managers))
    try:
        first = {m.instance_id: dict(m.owned) for m in managers}
        await asyncio.sleep(2.5 * TTL)  # several renewals, each lease outliving its ttl
        _consistent(managers, await _owners(managers[0]))
        for manager in managers:  # the same terms: renewed, never lost and claimed again
            now = manager.owned
            assert {s: lease.epoch for s, lease in now.items()} == {
                s: lease.epoch for s, lease in first[manager.instance_id].items()
            }
    finally:
        for manager in managers:
            await manager.stop()
