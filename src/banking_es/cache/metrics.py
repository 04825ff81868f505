"""Counters of the cache, Redis, rate limiter and request validation, in one small registry.

Plain counters (no Prometheus objects here): the metrics endpoint reads `snapshot()` and
exposes it in whatever format it uses. Built once per process by `bootstrap` and shared by
every component that counts something:

    cache_hits{level}          cache_misses{level}          cache_evictions{level}
    cache_invalidations{source}  redis_errors{op}  redis_shed{op}  redis_rejected{op}
    redis_latency (count, sum, max seconds)          redis_breaker_state (closed|open|half_open)
    rate_limited{reason}       validation_failures{rule}    validation_warnings{rule}
    dedup{outcome}             cache_warmed
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Latency:
    """A running count, sum and maximum of durations in seconds."""

    count: int = 0
    total: float = 0.0
    maximum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)


@dataclass
class CacheMetrics:
    """The registry: labelled counters, Redis latency and the breaker state."""

    counters: Counter[tuple[str, str]] = field(default_factory=Counter)
    redis_latency: Latency = field(default_factory=Latency)
    breaker_state: str = "closed"
    #: Also told of every increment (bootstrap points it at the Prometheus metrics).
    forward: Callable[[str, str, int], None] | None = None

    def inc(self, name: str, label: str = "", amount: int = 1) -> None:
        self.counters[(name, label)] += amount
        if self.forward is not None:
            self.forward(name, label, amount)

    def get(self, name: str, label: str = "") -> int:
        return self.counters[(name, label)]

    def total(self, name: str) -> int:
        return sum(v for (n, _), v in self.counters.items() if n == name)

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
