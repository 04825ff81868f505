"""The L1 cache: account states in this process (cachetools; LRU, LFU or TTL eviction)."""

from __future__ import annotations

import sys
from dataclasses import fields
from itertools import islice
from typing import Literal

from cachetools import Cache, LFUCache, LRUCache, TTLCache

from banking_es.domain.account import Account
from banking_es.observability.cache_and_redis import CacheAndRedisCounters


class _LRU(LRUCache[str, Account]):
    evictions = 0

    def popitem(self) -> tuple[str, Account]:
        self.evictions += 1
        return super().popitem()


class _LFU(LFUCache[str, Account]):
    evictions = 0

    def popitem(self) -> tuple[str, Account]:
        self.evictions += 1
        return super().popitem()


class _TTL(TTLCache[str, Account]):
    evictions = 0

    def popitem(self) -> tuple[str, Account]:
        self.evictions += 1
        return super().popitem()


class LocalAccountCache:
    """Copies in, copies out: a caller can never change a cached state by accident."""

    def __init__(
        self,
        size: int = 10000,
        ttl: float = 300,
        eviction: Literal["lru", "lfu", "ttl"] = "lru",
        metrics: CacheAndRedisCounters | None = None,
    ) -> None:
        self._entries: _LRU | _LFU | _TTL
        if eviction == "lfu":
            self._entries = _LFU(maxsize=size)
        elif eviction == "ttl":
            self._entries = _TTL(maxsize=size, ttl=ttl)
        else:
            self._entries = _LRU(maxsize=size)
        self.metrics = metrics or CacheAndRedisCounters()

    @property
    def hits(self) -> int:
        return self.metrics.get("cache_hits", "l1")

    @property
    def misses(self) -> int:
        return self.metrics.get("cache_misses", "l1")

    @property
    def evictions(self) -> int:
        return self._entries.evictions

    async def get(self, account_id: str) -> Account | None:
        return self.lookup(account_id)

    def lookup(self, account_id: str) -> Account | None:
        """`get` without awaiting (L1 is a dictionary)."""
        account = self._entries.get(account_id)
        if account is None:
            self.metrics.inc("cache_misses", "l1")
            return None
        self.metrics.inc("cache_hits", "l1")
        return account.copy()

    def peek(self, account_id: str) -> Account | None:
        """`lookup` without counting a hit or a miss."""
        account = self._entries.get(account_id)
        return None if account is None else account.copy()

    def version_of(self, account_id: str) -> int | None:
        """The cached version, without counting a hit or a miss."""
        account = self._entries.get(account_id)
        return None if account is None else account.version

    def put(self, account: Account, *, share: bool = True) -> bool:
        """Keep `account`; False when an entry at least as new is already here (`share` is
        for the port: there is nothing to share with)."""
        current = self._entries.get(account.id)
        if current is not None and current.version >= account.version:
            if current.version == account.version:
                self._entries[account.id] = account.copy()  # e.g. a later updated_at
            return False  # never move an entry backwards
        before = self._entries.evictions
        self._entries[account.id] = account.copy()
        if self._entries.evictions != before:
            self.metrics.inc("cache_evictions", "l1", self._entries.evictions - before)
        return True

    def invalidate(self, account_id: str) -> None:
        self._entries.pop(account_id, None)

    def __len__(self) -> int:
        return len(self._entries)

    def approximate_bytes(self, sample: int = 32) -> int:
        """Memory held by the entries: the mean deep size of up to `sample` of them, times
        their number (an estimate, cheap enough for every scrape)."""
        count = len(self._entries)
        if count == 0:
            return 0
        # The base class's lookup: the subclasses' would count as a use (LRU order, LFU count).
        keys = list(islice(iter(self._entries), sample))
        each = sum(_entry_size(k, Cache.__getitem__(self._entries, k)) for k in keys) / len(keys)
        return int(each * count)


_FIELDS = [f.name for f in fields(Account)]


def _entry_size(key: str, account: Account) -> int:
    """The key, the account and its field values (the table's slot for them is not counted)."""
    values = (getattr(account, name) for name in _FIELDS)
    return sys.getsizeof(key) + sys.getsizeof(account) + sum(sys.getsizeof(v) for v in values)
