"""Cache warming: load the most recently active accounts into the cache after start-up.

Runs in the background (requests are served meanwhile); progress goes to the log and to
`/health/ready` (component `cache`). The list comes from the `account_summaries` read
model ordered by `updated_at`; each account is loaded through `AccountService`, i.e. from
L2 when another process already has it, else from the store (snapshot + events). With
shards an instance warms, as it takes each shard (at start-up too), those of the accounts
that belong to the shard: its part of the same list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from banking_es.db.base import Database
from banking_es.observability.cache_and_redis import CacheAndRedisCounters

log = logging.getLogger("banking_es.cache")

RECENT_ACCOUNTS = "SELECT account_id FROM account_summaries ORDER BY updated_at DESC LIMIT $1"


class CacheWarmer:
    """Loads up to `limit` recently active accounts (`run`); `status()` reports progress,
    summed over its runs."""

    def __init__(
        self,
        db: Database,
        load: Callable[[str], Awaitable[object]],
        limit: int,
        metrics: CacheAndRedisCounters | None = None,
    ) -> None:
        self._db = db
        self._load = load
        self.limit = limit
        self.metrics = metrics or CacheAndRedisCounters()
        self.state = "off" if limit == 0 else "pending"
        self.loaded = 0
        self.failed = 0
        self.total = 0
        self.seconds = 0.0
        self._one_at_a_time = asyncio.Lock()

    async def run(self, belongs: Callable[[str], bool] | None = None) -> None:
        """Load the recently active accounts, only those `belongs` selects if given (the
        accounts of shards just taken). Runs go one at a time."""
        if self.limit == 0:
            return
        async with self._one_at_a_time:
            await self._run(belongs)

    async def _run(self, belongs: Callable[[str], bool] | None) -> None:
        self.state = "running"
        started = time.monotonic()
        try:
            rows = await self._db.fetch(RECENT_ACCOUNTS, self.limit)
        except Exception as exc:  # e.g. the read model is not there yet: warming is optional
            self.state = "failed"
            log.warning("cache warming skipped: %s", exc)
            return
        ids = [str(row["account_id"]) for row in rows]
        if belongs is not None:
            ids = [account_id for account_id in ids if belongs(account_id)]
        self.total += len(ids)
        log.info("cache warming: loading %d recently active accounts", len(ids))
        step = max(1, len(ids) // 10)
        loaded = failed = 0
        for index, account_id in enumerate(ids, 1):
            try:
                await self._load(account_id)
                loaded += 1
                self.metrics.inc("cache_warmed")
            except Exception:
                failed += 1
            if index % step == 0 and index < len(ids):
                log.info("cache warming: %d/%d accounts", index, len(ids))
        took = time.monotonic() - started
        self.loaded, self.failed = self.loaded + loaded, self.failed + failed
        self.seconds += took
        self.state = "done"
        log.info("cache warming done: %d accounts in %.2fs (%d failed)", loaded, took, failed)

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "loaded": self.loaded,
            "total": self.total,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
        }
