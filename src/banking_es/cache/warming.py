"""Cache warming: load the most recently active accounts into the cache after start-up.

Runs in the background (requests are served meanwhile); progress goes to the log and to
`/health/ready` (component `cache`). The list comes from the `account_summaries` read
model ordered by `updated_at`; each account is loaded through `AccountService`, i.e. from
L2 when another process already has it, else from the store (snapshot + events).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from banking_es.db.base import Database
from banking_es.observability.cache_and_redis import CacheAndRedisCounters

log = logging.getLogger("banking_es.cache")

RECENT_ACCOUNTS = "SELECT account_id FROM account_summaries ORDER BY updated_at DESC LIMIT $1"


class CacheWarmer:
    """Loads up to `limit` recently active accounts once; `status()` reports progress."""

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

    async def run(self) -> None:
        if self.limit == 0:
            return
        self.state = "running"
        started = time.monotonic()
        try:
            rows = await self._db.fetch(RECENT_ACCOUNTS, self.limit)
        except Exception as exc:  # e.g. the read model is not there yet: warming is optional
            self.state = "failed"
            log.warning("cache warming skipped: %s", exc)
            return
        self.total = len(rows)
        log.info("cache warming: loading %d recently active accounts", self.total)
        step = max(1, self.total // 10)
        for index, row in enumerate(rows, 1):
            try:
                await self._load(str(row["account_id"]))
                self.loaded += 1
                self.metrics.inc("cache_warmed")
            except Exception:
                self.failed += 1
            if index % step == 0 and index < self.total:
                log.info("cache warming: %d/%d accounts", index, self.total)
        self.seconds = time.monotonic() - started
        self.state = "done"
        log.info(
            "cache warming done: %d accounts in %.2fs (%d failed)",
            self.loaded,
            self.seconds,
            self.failed,
        )

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "loaded": self.loaded,
            "total": self.total,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
        }
