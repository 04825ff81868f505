"""A writer process for the fencing tests: it runs a `ShardManager` as instance NAME and
appends to ACCOUNT while it owns the account's shard, each append fenced by the epoch it
captured before a pause of PAUSE seconds (a command in flight). It prints `captured E` when
it has captured a fence and is about to pause, `wrote E V` for each append and `fenced E` for
each refused one. `python -m tests.integration.shard_writer URL NAME ACCOUNT TTL PAUSE
[REBALANCE_INTERVAL]`."""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import replace

from banking_es.db.postgres import PostgresDatabase
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    FencedOut,
    NewEvent,
    StreamAppend,
)
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.locks.base import LockManager
from banking_es.locks.postgres import PostgresLocks
from banking_es.shards.assignment import Limits
from banking_es.shards.leases import ShardLeases
from banking_es.shards.manager import ShardManager

SHARDS = 4


async def main(
    url: str, name: str, account: str, ttl: float, pause: float, rebalance: float
) -> None:
    db = await PostgresDatabase.connect(url, max_size=4)
    store = PostgresEventStore(db)
    manager = ShardManager(
        ShardLeases(db, ttl=ttl),
        LockManager(PostgresLocks(url)),
        instance_id=name,
        url=f"http://127.0.0.1/{name}",
        shard_count=SHARDS,
        limits=Limits(),
        rebalance_interval=rebalance,
    )
    await manager.start()
    while True:
        fence = manager.fence_for(account)
        if fence is None:
            await asyncio.sleep(0.05)
            continue
        print(f"captured {fence.epoch}", flush=True)
        await asyncio.sleep(pause)
        version = len(await store.read_stream(account))
        event = NewEvent(uuid.uuid4().hex, "MoneyDeposited", {"amount": "1.00"},
                         {"writer": name, "epoch": fence.epoch})  # fmt: skip
        request = AppendRequest([StreamAppend(account, version, [event])])
        try:
            await store.append(replace(request, fence=fence))
        except FencedOut as exc:
            print(f"fenced {exc.epoch}", flush=True)
            manager.fenced_out(exc.shard, exc.epoch)
            continue
        except ConcurrencyError:
            continue
        print(f"wrote {fence.epoch} {version + 1}", flush=True)


if __name__ == "__main__":
    url, name, account, ttl, pause = sys.argv[1:6]
    rebalance = float(sys.argv[6]) if len(sys.argv) > 6 else 3600.0
    asyncio.run(main(url, name, account, float(ttl), float(pause), rebalance))
