"""Sharding in the composition root: on when `INSTANCE_URL` is set (several instances on one
PostgreSQL database), off otherwise (one instance owns every shard; nothing changes for the
user). When on, each `serve` is one instance of one worker: the shard manager and the lock
manager are built here, and the `shards` and `locks` readiness components with them; the
account service and the cache warmer are hooked into its handovers (`Sharding.serve`), and
the hold expiry job runs on every instance for the shards it owns (`build_hold_expiry`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from banking_es.application.accounts import AccountService
from banking_es.application.hold_expiry import HOLD_EXPIRY_LEASE, HoldExpiry
from banking_es.application.ports import Clock
from banking_es.cache.warming import CacheWarmer
from banking_es.config import Settings, SettingsError
from banking_es.db.base import Database
from banking_es.db.lease import LeaseElection
from banking_es.eventstore.base import EventStore
from banking_es.locks import lock_manager
from banking_es.locks.base import LockError, LockManager
from banking_es.observability.metrics import Metrics
from banking_es.shards.assignment import Limits
from banking_es.shards.forwarder import Forwarder, HttpForwarder
from banking_es.shards.leases import ShardLeases
from banking_es.shards.manager import ShardManager
from banking_es.tasks import cancel_all

#: The lock taken and given back by the `locks` readiness check.
PROBE_LOCK = "readiness-probe"


def sharding_on(settings: Settings) -> bool:
    """Whether this server is one of several instances; raise `SettingsError` (one line)
    for a setting several instances cannot run with."""
    if not settings.instance_url:
        return False
    if settings.backend != "postgres":
        raise SettingsError("INSTANCE_URL needs PostgreSQL: instances share one database")
    if not settings.cluster_secret:
        raise SettingsError("INSTANCE_URL needs CLUSTER_SECRET: it signs forwarded requests")
    if settings.workers != 1:
        raise SettingsError("INSTANCE_URL needs WORKERS=1: each instance is one process")
    return True


@dataclass
class Sharding:
    """This instance's part in the shard map, and the locks it uses."""

    manager: ShardManager
    locks: LockManager[Any]
    #: Signs and checks the hop header of forwarded requests.
    secret: str
    #: Forwards commands to other instances, its connections kept alive between requests
    #: (in tests that reach the other instance's app without a socket, an ASGI one).
    http: Forwarder
    _warming: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def serve(self, accounts: AccountService, warmer: CacheWarmer) -> None:
        """Hook the account service and the cache warmer into the handovers: a shard given
        up first drains the service's commands for its accounts; a shard taken has the
        cache warmed for its accounts, in the background (the start-up warming, limited to
        the shard)."""
        manager = self.manager

        def drain(shard: int) -> Coroutine[Any, Any, None]:
            return accounts.drain(lambda account_id: manager.shard_of(account_id) == shard)

        def warm(shards: Collection[int]) -> None:
            taken = frozenset(shards)
            task = asyncio.create_task(
                warmer.run(lambda account_id: manager.shard_of(account_id) in taken),
                name="shard-cache-warming",
            )
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)

        manager.on_handover(drain=drain, warm=warm)

    async def locks_health(self) -> dict[str, Any]:
        """The `locks` readiness component: a probe lock taken and given back."""
        try:
            held = await self.locks.acquire(PROBE_LOCK, ttl=5.0, timeout=1.0, auto_extend=False)
            await held.release()
        except LockError as exc:
            return {"status": "down", "error": str(exc) or type(exc).__name__}
        return {"status": "ok"}

    async def close(self) -> None:
        await cancel_all(list(self._warming))
        await self.http.aclose()
        await self.locks.close()


def build_sharding(
    settings: Settings, db: Database, redis_client: Any | None, metrics: Metrics
) -> Sharding | None:
    """The shard and lock managers when sharding is on (`sharding_on`), else None."""
    if not sharding_on(settings):
        return None
    locks = lock_manager(db, redis_client, prefix=settings.redis_key_prefix, metrics=metrics.locks)
    manager = ShardManager(
        ShardLeases(db, ttl=settings.shard_lease_ttl),
        locks,
        instance_id=settings.effective_instance_id,
        url=settings.effective_instance_url,
        shard_count=settings.shard_count,
        limits=Limits(
            min_per_instance=settings.shards_min_per_instance,
            max_per_instance=settings.shards_max_per_instance,
            threshold=settings.shard_rebalance_threshold,
        ),
        rebalance_interval=settings.shard_rebalance_interval,
    )
    # Longer than a command may take on the owner (its retry budget), so it answers first.
    http = HttpForwarder(timeout=settings.command_retry_budget_s + 10)
    return Sharding(manager, locks, settings.cluster_secret or "", http)


def build_hold_expiry(
    db: Database,
    store: EventStore,
    accounts: AccountService,
    clock: Clock,
    sharding: Sharding | None,
) -> HoldExpiry:
    """The hold expiry job: in one process at a time (its lease), or with shards on every
    instance, for the holds on accounts of the shards it owns (each expiry fenced)."""
    if sharding is None:
        leader = LeaseElection(db, HOLD_EXPIRY_LEASE, clock)
        return HoldExpiry(store, accounts.expire_hold, clock, leader=leader)
    return HoldExpiry(store, accounts.expire_hold, clock, owns=sharding.manager.owns)
