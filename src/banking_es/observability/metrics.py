"""Prometheus metrics of one process, aggregated over all workers by multiprocess mode.

One `Metrics` is built per process by the composition root and handed to whatever counts
something; each metric lives in the `Metrics`' own registry, so tests that build several apps
in one process see their own counts. With `PROMETHEUS_MULTIPROC_DIR` set before
prometheus-client is imported (`banking-es serve` does it), every worker writes its values to
files there and a scrape of any worker merges them. Names, labels and how gauges are merged:
docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from banking_es.eventstore.base import AppendRequest, RecordedEvent
from banking_es.observability.cache_and_redis import REDIS_LATENCY_BUCKETS, CacheAndRedisCounters
from banking_es.observability.locks import LockMetrics
from banking_es.observability.multiproc import ENV_DIR
from banking_es.observability.requests import LATENCY_BUCKETS, RequestCounts

PREFIX = "banking_es"

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
#: Label of requests that matched no route (never the raw path: unbounded cardinality).
UNMATCHED_ROUTE = "<unmatched>"

COMMAND_OUTCOMES = ("ok", "rejected", "conflict", "failed")
LOGIN_OUTCOMES = ("success", "failure", "locked")


def multiprocess_enabled() -> bool:
    """True when metric values live in the shared directory (decided at client import)."""
    return values.ValueClass is not values.MutexValue


def _name(name: str) -> str:
    return f"{PREFIX}_{name}"


class Metrics:
    """Every metric of the service; the attributes are the public names to increment."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(_name(name), doc, list(labels), registry=r)

        def gauge(name: str, doc: str, labels: Sequence[str] = (), mode: str = "livesum") -> Gauge:
            return Gauge(_name(name), doc, list(labels), registry=r, multiprocess_mode=mode)  # type: ignore[arg-type]

        # -- HTTP ------------------------------------------------------------------------
        self.http_requests = counter(
            "http_requests_total",
            "HTTP requests by route template, method and status",
            ("route", "method", "status"),
        )
        self.http_duration = Histogram(
            _name("http_request_duration_seconds"),
            "HTTP request latency by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # -- commands --------------------------------------------------------------------
        self.commands = counter(
            "commands_total",
            "Commands by type and outcome: ok, rejected (by a rule), conflict (retried), failed",
            ("command", "outcome"),
        )
        # -- event store -----------------------------------------------------------------
        self.append_batch_size = Histogram(
            _name("eventstore_batch_size"),
            "Appends committed together in one transaction (group commit)",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.append_batch_duration = Histogram(
            _name("eventstore_batch_duration_seconds"),
            "Time to commit one batch of appends",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.append_queue = gauge(
            "eventstore_queue_length", "Appends waiting for the next batch (summed over workers)"
        )
        self.events_appended = counter("eventstore_events_appended_total", "Events appended")
        self.snapshots_written = counter("snapshots_written_total", "Aggregate snapshots written")
        self.snapshots_loaded = counter("snapshots_loaded_total", "Aggregate snapshots loaded")
        self.head_position = gauge(
            "eventstore_head_position", "Highest global position in the store", mode="livemax"
        )
        # -- projections and outbox (refreshed when scraped) --------------------------
        self.projection_position = gauge(
            "projection_position",
            "Checkpoint of each projection",
            ("projection",),
            "livemostrecent",
        )
        self.projection_lag_events = gauge(
            "projection_lag_events",
            "Events appended but not yet applied by each projection",
            ("projection",),
            "livemostrecent",
        )
        self.projection_lag_seconds = gauge(
            "projection_lag_seconds",
            "Age of the oldest event a projection has not applied (0 when caught up)",
            ("projection",),
            "livemostrecent",
        )
        self.outbox_backlog = gauge(
            "outbox_backlog", "Outbox rows not yet published", mode="livemostrecent"
        )
        self.outbox_oldest_age = gauge(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when empty)",
            mode="livemostrecent",
        )
        self.gauge_refresh_errors = counter(
            "gauge_refresh_errors_total",
            "Scrapes whose database-derived gauges could not be refreshed",
            ("source",),
        )
        # -- cache (L1 in process, L2 Redis) ---------------------------------------------
        self.cache_requests = counter(
            "cache_requests_total",
            "Cache lookups by level (l1, l2) and result (hit, miss)",
            ("level", "result"),
        )
        self.cache_evictions = counter(
            "cache_evictions_total", "Entries evicted for room or age, by level", ("level",)
        )
        self.cache_errors = counter(
            "cache_errors_total", "Cache calls that failed (and fell back), by level", ("level",)
        )
        self.cache_entries = gauge(
            "cache_entries", "Entries in the in-process (l1) account cache, all workers", ("level",)
        )
        self.cache_memory = gauge(
            "cache_memory_bytes",
            "Approximate memory of the in-process (l1) account cache, all workers",
            ("level",),
        )
        self.cache_l2_dropped = counter(
            "cache_l2_dropped_total", "Account states not written to Redis (queue full)"
        )
        self.cache_warmed = counter("cache_warmed_total", "Accounts loaded by cache warming")
        self.cache_invalidations = counter(
            "cache_invalidations_total",
            "Invalidations received from other processes, by source (pubsub)",
            ("source",),
        )
        self.page_cache_requests = counter(
            "page_cache_requests_total",
            "Event page cache lookups by level (l1, l2) and result (hit, miss)",
            ("level", "result"),
        )
        self.dedup = counter(
            "dedup_total",
            "Redis command dedup claims by outcome: claimed, pending, replayed, unavailable",
            ("outcome",),
        )
        self.redis_latency = Histogram(
            _name("redis_latency_seconds"),
            "Latency of Redis calls that answered",
            buckets=REDIS_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_shed = counter(
            "redis_shed_total",
            "Redis calls shed (too many in flight), by operation",
            ("operation",),
        )
        self.redis_rejected = counter(
            "redis_rejected_total",
            "Redis calls refused by the open circuit breaker, by operation",
            ("operation",),
        )
        self.redis_breaker_open = gauge(
            "redis_breaker_open",
            "Workers whose Redis circuit breaker is open or half-open (Redis not used)",
        )
        self.redis_breaker_transitions = counter(
            "redis_breaker_transitions_total",
            "Changes of a worker's Redis circuit breaker, by new state",
            ("state",),
        )
        # -- identity and limits --------------------------------------------------------
        self.validation_failures = counter(
            "validation_failures_total",
            "Requests refused by a validation rule, by rule",
            ("rule",),
        )
        self.rate_limited = counter(
            "rate_limit_rejections_total",
            "Requests refused with 429 rate_limited, by limit (client, user, ip, auth)",
            ("limit",),
        )
        self.validation_warnings = counter(
            "validation_warnings_total",
            "Requests accepted with a warning of a validation rule, by rule",
            ("rule",),
        )
        self.logins = counter(
            "logins_total", "Login attempts by outcome: success, failure, locked", ("outcome",)
        )
        # -- messaging ----------------------------------------------------------------
        self.dead_letters = counter(
            "dead_letters_total", "Messages moved to the dead-letter topic/table", ("topic",)
        )
        self.kafka_published = counter(
            "kafka_messages_published_total", "Messages published to Kafka", ("topic",)
        )
        self.kafka_publish_errors = counter(
            "kafka_publish_errors_total", "Failed Kafka publish attempts", ("topic",)
        )
        self.kafka_consumed = counter(
            "kafka_messages_consumed_total",
            "Messages consumed from Kafka, by outcome (ok, retry, dead_letter, duplicate)",
            ("topic", "group", "outcome"),
        )
        self.kafka_consumer_lag = gauge(
            "kafka_consumer_lag",
            "Messages behind the partition's end offset, per consumer group and partition",
            ("topic", "group", "partition"),
            "livemostrecent",
        )
        # -- shards: one instance (sharding off) owns all, whatever its worker count -----
        self.shards_owned = gauge(
            "shards_owned", "Shards this instance owns (sum over instances)", mode="livemax"
        )
        # -- leases -------------------------------------------------------------------
        self.leader = gauge(
            "leader",
            "Workers running a single-leader role (projections, relay): 1 each, summed",
            ("role",),
        )
        #: The lock manager's (locks/), in this registry.
        self.locks = LockMetrics(r)
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._requests = RequestCounts()

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: `labels()` takes a lock and checks every
        label on each call, and the hot path counts several times per request."""
        key = (metric._name, labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < 10_000:  # bounded: labels are routes and small sets
                self._children[key] = child
        return child

    # ---- hooks the composition root wires in ----------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Counted in this worker; published by `export_requests`."""
        self._requests.observe(route, method, status, seconds)

    def export_requests(self) -> None:
        """Add the requests counted since the last call (on every scrape and every few seconds
        in each worker, like `export_cache`)."""
        drained = self._requests.drain()
        for (route, method, status), requests in drained.requests.items():
            self._child(self.http_requests, route, method, str(status)).inc(requests)
        for (route, method), counts in drained.durations.items():
            # prometheus-client has no "add n observations": add to its buckets and sum.
            histogram: Any = self._child(self.http_duration, route, method)
            for bucket, amount in zip(histogram._buckets, counts[:-1], strict=True):
                if amount:
                    bucket.inc(amount)
            histogram._sum.inc(counts[-1])

    def observe_command(self, command: str, outcome: str) -> None:
        """`AccountService.on_command`."""
        self._child(self.commands, command, outcome).inc()

    def leader_role(self, role: str) -> Callable[[bool], None]:
        """`banking_es_leader{role}`, exported as 0 from now on (so "no leader" sums to 0);
        the function returned is told True / False as this process takes / loses the role."""
        gauge = self.leader.labels(role)
        gauge.set(0)
        return lambda held: gauge.set(1 if held else 0)

    def observe_batch(self, size: int, seconds: float, queue_length: int = 0) -> None:
        """The event store's `on_batch` (group commit)."""
        self.append_batch_size.observe(size)
        self.append_batch_duration.observe(seconds)
        self.append_queue.set(queue_length)

    def observe_append(self, request: AppendRequest, recorded: Sequence[RecordedEvent]) -> None:
        """The event store's `on_append`: one successful append."""
        self.events_appended.inc(len(recorded))
        written = sum(1 for stream in request.streams if stream.snapshot is not None)
        if written:
            self.snapshots_written.inc(written)

    def observe_snapshot_load(self) -> None:
        self.snapshots_loaded.inc()

    def export_cache(
        self, cache: CacheAndRedisCounters, l1_entries: int = 0, l1_bytes: int = 0
    ) -> None:
        """Add what `cache` counted since the last call; set the breaker and l1 gauges.

        Called on every scrape and every few seconds by each worker, so counting on the hot
        path stays a plain integer increment."""
        drained = cache.drain()
        for (name, label), amount in drained.counters.items():
            target = self._cache_target(name, label)
            if target is not None:
                target.inc(amount)
        if drained.latency_sum or any(drained.latency_buckets):
            # prometheus-client has no "add n observations": add to its buckets and sum.
            histogram: Any = self.redis_latency
            for bucket, amount in zip(histogram._buckets, drained.latency_buckets, strict=True):
                if amount:
                    bucket.inc(amount)
            histogram._sum.inc(drained.latency_sum)
        self.redis_breaker_open.set(0 if cache.breaker_state == "closed" else 1)
        self._child(self.cache_entries, "l1").set(l1_entries)
        self._child(self.cache_memory, "l1").set(l1_bytes)

    def _cache_target(self, name: str, label: str) -> Any:
        """The Prometheus child a `CacheAndRedisCounters` counter adds to (None: not exported)."""
        lookups = {
            "cache_hits": (self.cache_requests, "hit"),
            "cache_misses": (self.cache_requests, "miss"),
            "page_cache_hits": (self.page_cache_requests, "hit"),
            "page_cache_misses": (self.page_cache_requests, "miss"),
        }
        if name in lookups:
            metric, result = lookups[name]
            return self._child(metric, label, result)
        labelled = {
            "cache_evictions": self.cache_evictions,
            "cache_invalidations": self.cache_invalidations,
            "redis_shed": self.redis_shed,
            "redis_rejected": self.redis_rejected,
            "redis_breaker_transitions": self.redis_breaker_transitions,
            "dedup": self.dedup,
        }
        if name in labelled:
            return self._child(labelled[name], label)
        if name == "redis_errors":
            return self._child(self.cache_errors, "l2")
        return {"cache_l2_dropped": self.cache_l2_dropped, "cache_warmed": self.cache_warmed}.get(
            name
        )

    def count(self, metric: Any, *labels: str) -> float:
        """This process's value of a counter or gauge (tests and status pages)."""
        child = metric.labels(*labels) if labels else metric
        value: float = child._value.get()
        return value

    def observe_rate_limited(self, limit: str) -> None:
        """A 429 `rate_limited` (the rate limiter's `on_refused`)."""
        self._child(self.rate_limited, limit).inc()

    def observe_validation(self, rule: str, *, warning: bool = False) -> None:
        """A request refused by (or, with `warning`, accepted with a warning of) a rule."""
        self._child(self.validation_warnings if warning else self.validation_failures, rule).inc()

    # ---- exposition -----------------------------------------------------------------

    def render(self) -> bytes:
        """The text format: this registry, or every worker's files in multiprocess mode."""
        if multiprocess_enabled():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST

    def close(self) -> None:
        """Forget this process's live gauges (they would otherwise linger in the sums)."""
        if multiprocess_enabled() and os.environ.get(ENV_DIR):
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
