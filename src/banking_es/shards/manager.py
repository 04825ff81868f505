"""One instance's part in the shard map: keep its leases, take its share, hand shards over.

Every step (a third of the lease ttl) an instance says it is alive, renews its leases with
their loads (`load.ShardLoads`; a lease it cannot renew is gone: another instance claimed it),
hands over the shards a move asks it to give up (new commands routed away, its queue for the
shard drained within a bounded time, then released), and claims the shards the plan
(`assignment.plan_moves`) gives it: those of dead owners, free ones, and those handed to it,
warming its cache for them in the background (`on_handover`).
Every instance computes the same plan from the same map, and the database decides any race,
so no coordinator is needed for that. Moves between live instances (joins, load) are decided
by one instance at a time, the holder of the `shard-rebalancer` lock, at most once per
`SHARD_REBALANCE_INTERVAL`; a shard that arrived by a move stays for the cooldown, as the
database records it (`moved_within`), whoever holds the lock. Each step also keeps the map it
read (`route`), for forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from typing import Any

from banking_es.eventstore.base import Fence
from banking_es.locks.base import LockError, LockManager
from banking_es.shards.assignment import Limits, Move, plan_moves
from banking_es.shards.keys import shard_of
from banking_es.shards.leases import Lease, ShardLeases
from banking_es.shards.load import ShardLoads

log = logging.getLogger(__name__)

REBALANCER_LOCK = "shard-rebalancer"
#: Rebalancing intervals a moved shard stays where it went (no back and forth during
#: restarts), counted from its handover's claim by the database's clock.
COOLDOWN_ROUNDS = 3


async def _nothing_to_drain(shard: int) -> None:
    return None


def _nothing_to_warm(shards: Collection[int]) -> None:
    return None


class ShardManager:
    """The leases this instance holds, and the loop that keeps them (module docstring)."""

    def __init__(
        self,
        leases: ShardLeases,
        locks: LockManager[Any],
        *,
        instance_id: str,
        url: str,
        shard_count: int,
        limits: Limits,
        rebalance_interval: float,
        loads: ShardLoads | None = None,
    ) -> None:
        self.leases = leases
        self.locks = locks
        self.instance_id = instance_id
        self.url = url
        self.shard_count = shard_count
        self.limits = limits
        self.rebalance_interval = rebalance_interval
        #: The commands executed per shard here (`executed`), recorded with each renewal.
        self.loads = loads or ShardLoads()
        self._drain: Callable[[int], Awaitable[None]] = _nothing_to_drain
        self._warm: Callable[[Collection[int]], None] = _nothing_to_warm
        self._owned: dict[int, Lease] = {}
        #: Shards being handed over (queue draining) -> the URL their commands go to now.
        self._leaving: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_rebalance = float("-inf")
        self._stepping = asyncio.Lock()  # one step at a time, also when called from outside
        #: shard -> the URL of its live owner, as of the last step (forwarding reads it).
        self._routes: dict[int, str] = {}
        self._urls: dict[str, str] = {}  # live instance -> its URL, as of the last step

    def on_handover(
        self,
        *,
        drain: Callable[[int], Awaitable[None]],
        warm: Callable[[Collection[int]], None],
    ) -> None:
        """What the instance does when a shard changes hands, set once the account service
        exists (it takes this manager as its fences): `drain(shard)` waits for the shard's
        queued and running commands before the shard is released (bounded by a third of a
        lease ttl); `warm(shards)` starts warming the cache for shards just taken, and must
        not wait for it."""
        self._drain = drain
        self._warm = warm

    @property
    def owned(self) -> dict[int, Lease]:
        """The shards this instance holds now, and their leases."""
        return dict(self._owned)

    def fence_for(self, account_id: str) -> Fence | None:
        """The fence of an append for `account_id`, or None when this instance does not own
        the account's shard (the request belongs to the owner)."""
        shard = shard_of(account_id, self.shard_count)
        lease = self._owned.get(shard)
        return Fence(shard, lease.epoch) if lease is not None else None

    def shard_of(self, account_id: str) -> int:
        return shard_of(account_id, self.shard_count)

    def executed(self, shard: int, commands: int) -> None:
        """`commands` were executed under this shard's fence (its load)."""
        self.loads.add(shard, commands)

    def owns(self, account_id: str) -> bool:
        """Whether new commands for `account_id` run here (its shard held, not being handed
        over)."""
        return self.route(shard_of(account_id, self.shard_count)) is None

    def route(self, shard: int) -> str | None:
        """Where a command for `shard` runs: None here (this instance owns it), else the
        URL of its owner as of the last step (of a handover's target while this instance
        drains it); "" when it has no live owner (a failover)."""
        if shard in self._owned and shard not in self._leaving:
            return None
        leaving = self._leaving.get(shard)
        return leaving if leaving is not None else self._routes.get(shard, "")

    def fenced_out(self, shard: int, epoch: int) -> None:
        """The store refused an append of this epoch: the shard has a newer owner."""
        lease = self._owned.get(shard)
        if lease is not None and lease.epoch == epoch:
            del self._owned[shard]
            log.warning("shard %d: fenced out at epoch %d, dropped", shard, epoch)

    async def health(self) -> dict[str, Any]:
        """The `shards` readiness component: `ok` while every shard has a live lease,
        `degraded` while some have none (a failover or handover under way)."""
        states = await self.leases.states()
        unowned = [s.shard for s in states if s.status in ("available", "failed")]
        return {
            "status": "degraded" if unowned else "ok",
            "instance": self.instance_id,
            "owned": sorted(self._owned),
            "unowned": unowned,
        }

    # ---- the loop -----------------------------------------------------------------------

    async def start(self) -> None:
        """Register, give instances starting together one step to see each other, take this
        instance's share, and keep stepping in the background."""
        await self.leases.register(self.instance_id, self.url)
        await asyncio.sleep(self.leases.ttl / 3)
        await self.step()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.leases.ttl / 3)
            try:
                await self.step()
            except Exception:  # the database is away: the leases lapse after their ttl
                log.exception("shard step failed")

    async def stop(self) -> None:
        """Stop stepping and give every shard up at once (a graceful shutdown: the others
        take them at their next step instead of after a lease ttl)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._stepping:
            await self.leases.leave(self.instance_id)  # first: nothing more planned for it
            await self._give_up(set(self._owned))

    async def step(self) -> None:
        """One round: heartbeat, renewals and handovers, then the claims the plan gives this
        instance; a rebalancing round when due."""
        async with self._stepping:
            await self._step()

    async def _step(self) -> None:
        await self.leases.register(self.instance_id, self.url)
        handing: dict[int, str] = {}
        for shard in sorted(self._owned):
            lease = self._owned[shard]
            renewed = await self.leases.renew(lease, load=self.loads.rate(shard))
            if renewed is None:
                del self._owned[shard]
                self.loads.forget(shard)
                log.warning("shard %d: lease lost at epoch %d", shard, lease.epoch)
                continue
            self._owned[shard] = renewed
            if renewed.handover_to not in (None, self.instance_id):
                handing[shard] = renewed.handover_to
        # After every renewal, so the drains cannot make the other leases lapse.
        await self._give_up(set(handing), handing)
        await self._claim_share()
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_rebalance >= self.rebalance_interval:
            self._last_rebalance = loop.time()
            await self.rebalance()

    async def _give_up(self, shards: set[int], targets: dict[int, str] | None = None) -> None:
        """Route the shards' new commands away, wait (bounded) for their queued and running
        ones, then release them; the appends of any still running are refused by the fence."""
        if not shards:
            return
        urls = {s: self._urls.get((targets or {}).get(s, ""), "") for s in shards}
        self._leaving.update(urls)
        try:
            try:
                async with asyncio.timeout(self.leases.ttl / 3):
                    await asyncio.gather(*(self._drain(shard) for shard in sorted(shards)))
            except TimeoutError:
                log.warning("shards %s: not drained in time, released anyway", sorted(shards))
            for shard in sorted(shards):
                lease = self._owned.pop(shard, None)  # None: fenced out while it drained
                self.loads.forget(shard)
                self._routes[shard] = urls[shard]
                if lease is not None:
                    await self.leases.release(lease)
        finally:
            for shard in shards:
                self._leaving.pop(shard, None)

    async def _claim_share(self) -> None:
        states = await self.leases.states()
        instances = await self.leases.instances()
        alive = [i.id for i in instances if i.alive]
        owners = {
            s.shard: s.owner if s.status in ("assigned", "rebalancing") else None for s in states
        }
        urls = self._urls = {i.id: i.url for i in instances if i.alive}
        self._routes = {shard: urls[owner] for shard, owner in owners.items() if owner in urls}
        mine = {s.shard for s in states if s.handover_to == self.instance_id and s.owner is None}
        # Held in this instance's name by a process before this one (a restart with the same
        # INSTANCE_ID): claimed again at once, in a new epoch, rather than after the ttl.
        mine |= {s.shard for s in states if s.owner == self.instance_id and s.handover_to is None}
        orphans = plan_moves(owners, alive, {}, replace(self.limits, max_moves=0))
        mine |= {move.shard for move in orphans if move.target == self.instance_id}
        taken = []
        for shard in sorted(mine - self._owned.keys()):
            lease = await self.leases.claim(shard, self.instance_id)
            if lease is not None:
                self._owned[shard] = lease
                self.loads.seed(shard, lease.load)
                taken.append(shard)
                log.info("shard %d: owned at epoch %d", shard, lease.epoch)
        if taken:
            self._warm(taken)

    async def rebalance(self) -> list[Move]:
        """Plan one round of moves between live instances and ask their owners to hand the
        shards over; nothing when another instance holds the rebalancer lock."""
        try:
            held = await self.locks.acquire(REBALANCER_LOCK, ttl=self.leases.ttl, timeout=0)
        except LockError:  # another instance rebalances, or the lock store is away
            return []
        try:
            states = await self.leases.states()
            alive = [i.id for i in await self.leases.instances() if i.alive]
            owners = {s.shard: s.owner if s.status == "assigned" else None for s in states}
            loads = {s.shard: s.load for s in states}
            # Shards taken from a stopped or dead owner are not frozen: an instance back from
            # a restart may get back at once what it gave up when it stopped.
            frozen = await self.leases.moved_within(COOLDOWN_ROUNDS * self.rebalance_interval)
            frozen |= {s.shard for s in states if s.status == "rebalancing"}
            moves = [
                move
                for move in plan_moves(owners, alive, loads, self.limits, frozen)
                if move.source is not None and move.source in alive
            ]
            requested = []
            for move in moves:
                if await self.leases.hand_over(move.shard, move.target):
                    log.info("shard %d: moving from %s to %s", move.shard, move.source, move.target)
                    requested.append(move)
            return requested
        finally:
            await held.release()
