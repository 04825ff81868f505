"""Counters of the account and page caches and of every Redis call (the cache's, the rate
limiter's, the idempotency dedup's), in one small per-process registry.

Plain counters (no Prometheus objects, no lock): the hot path counts here, and
`observability.metrics.Metrics.export_cache` adds what was counted since its last call to
the Prometheus metrics (on every scrape and every few seconds), so a cached read costs no
locked write. Built once per process by `bootstrap` and shared by the cache components:

    cache_hits{level}  cache_misses{level}  cache_evictions{level}  cache_l2_dropped
    page_cache_hits{level}  page_cache_misses{level}  cache_invalidations{source}
    redis_errors{op}  redis_shed{op}  redis_rejected{op}  redis_breaker_transitions{state}
    redis_latency (buckets, count, sum, max seconds)  redis_breaker_state  dedup{outcome}
    cache_warmed
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the Redis latency histogram; the last bucket is +Inf.
REDIS_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class Latency:
    """Counts per bucket, sum and maximum of durations in seconds."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(REDIS_LATENCY_BUCKETS) + 1))
    count: int = 0
    total: float = 0.0
    maximum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(REDIS_LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)


@dataclass
class Drained:
    """What was counted since the previous `CacheAndRedisCounters.drain()`."""

    counters: dict[tuple[str, str], int]
    latency_buckets: list[int]
    latency_sum: float


@dataclass
class CacheAndRedisCounters:
    """The registry: labelled counters, Redis latency and the breaker state."""

    counters: Counter[tuple[str, str]] = field(default_factory=Counter)
    redis_latency: Latency = field(default_factory=Latency)
    breaker_state: str = "closed"
    _drained: Counter[tuple[str, str]] = field(default_factory=Counter, repr=False)
    _drained_latency: Latency = field(default_factory=Latency, repr=False)

    def inc(self, name: str, label: str = "", amount: int = 1) -> None:
        self.counters[(name, label)] += amount

    def get(self, name: str, label: str = "") -> int:
        return self.counters[(name, label)]

    def total(self, name: str) -> int:
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def drain(self) -> Drained:
        """The increments since the last call (for the exporter; the totals stay)."""
        deltas = {
            key: value - self._drained[key]
            for key, value in self.counters.items()
            if value != self._drained[key]
        }
        self._drained.update(deltas)
        latency, before = self.redis_latency, self._drained_latency
        buckets = [now - then for now, then in zip(latency.buckets, before.buckets, strict=True)]
        seconds = latency.total - before.total
        before.buckets = list(latency.buckets)
        before.total = latency.total
        return Drained(deltas, buckets, seconds)

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain data: `{name: {label: value}}` plus latency and breaker state."""
        out: dict[str, Any] = {}
        for (name, label), value in sorted(self.counters.items()):
            out.setdefault(name, {})[label] = value
        out["redis_latency_seconds"] = {
            "count": self.redis_latency.count,
            "sum": round(self.redis_latency.total, 6),
            "max": round(self.redis_latency.maximum, 6),
        }
        out["redis_breaker_state"] = self.breaker_state
        return out
