"""The L1 cache: account states in this process (cachetools; LRU, LFU or TTL eviction)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from cachetools import Cache, LFUCache, LRUCache, TTLCache

from banking_es.domain.account import Account


class LocalAccountCache:
    """Copies in, copies out: a caller can never change a cached state by accident."""

    def __init__(
        self, size: int = 10000, ttl: float = 300, eviction: Literal["lru", "lfu", "ttl"] = "lru"
    ) -> None:
        self._entries: Cache[str, Account]
        if eviction == "lfu":
            self._entries = LFUCache(maxsize=size)
        elif eviction == "ttl":
            self._entries = TTLCache(maxsize=size, ttl=ttl)
        else:
            self._entries = LRUCache(maxsize=size)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        #: Called with "hit", "miss" or "eviction" (metrics: cache level l1).
        self.on_result: Callable[[str], None] | None = None

    def get(self, account_id: str) -> Account | None:
        account = self._entries.get(account_id)
        if account is None:
            self.misses += 1
            if self.on_result is not None:
                self.on_result("miss")
            return None
        self.hits += 1
        if self.on_result is not None:
            self.on_result("hit")
        return account.copy()

    def put(self, account: Account) -> None:
        current = self._entries.get(account.id)
        if current is not None and current.version > account.version:
            return  # never move an entry backwards
        if current is None and len(self._entries) >= self._entries.maxsize:
            self.evictions += 1  # cachetools makes room by evicting one entry
            if self.on_result is not None:
                self.on_result("eviction")
        self._entries[account.id] = account.copy()

    def invalidate(self, account_id: str) -> None:
        self._entries.pop(account_id, None)

    def __len__(self) -> int:
        return len(self._entries)
