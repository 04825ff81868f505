"""Prometheus metrics of the lock manager (locks/); names: docs/observability.md."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Seconds: from an uncontended acquisition to a leader's whole term.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HOLD_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0)

#: `outcome` of an acquisition: `acquired`, `timeout` (waited its time), `error` (the
#: backend failed).
OUTCOMES = ("acquired", "timeout", "error")


class LockMetrics:
    """The lock metrics, in the registry of the process's `Metrics` (or a test's own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.acquisitions = Counter(
            "banking_es_lock_acquisitions_total",
            "Lock acquisitions by lock and outcome (acquired, timeout, error)",
            ["lock", "outcome"],
            registry=r,
        )
        self.contended = Counter(
            "banking_es_lock_contended_total",
            "Acquisitions that found the lock held by another and had to wait",
            ["lock"],
            registry=r,
        )
        self.lost = Counter(
            "banking_es_lock_lost_total",
            "Locks that expired or were taken over while held",
            ["lock"],
            registry=r,
        )
        self.wait = Histogram(
            "banking_es_lock_wait_seconds",
            "Time from asking for a lock to getting it (or giving up)",
            ["lock"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.hold = Histogram(
            "banking_es_lock_hold_seconds",
            "Time a lock was held, acquisition to release or loss",
            ["lock"],
            buckets=HOLD_BUCKETS,
            registry=r,
        )
