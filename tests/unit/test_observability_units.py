"""Metrics hooks, event helpers and gauge refresh, without a server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.clock_support import EPOCH, FakeClock
from tests.e2e.observability_support import (
    NOT_YET_EXPORTED,
    ROOT,
    alert_expressions,
    dashboard_expressions,
    missing,
    named,
)

from banking_es.application.ports import ProjectionStatus
from banking_es.cache.local import LocalAccountCache
from banking_es.domain.account import Account
from banking_es.eventstore.base import OutboxStats
from banking_es.observability.cache_and_redis import CacheAndRedisCounters
from banking_es.observability.events import record_dead_letter, record_login, record_rate_limited
from banking_es.observability.gauges import refresh_gauges
from banking_es.observability.metrics import Metrics, multiprocess_enabled
from banking_es.observability.multiproc import ENV_DIR, prepare_multiprocess_dir


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def account(account_id: str) -> Account:
    state = Account(account_id)
    state.apply(Account.open(account_id, "Ada", Decimal("0.00"), "USD"))
    return state


def test_tests_run_in_single_process_mode() -> None:
    assert not multiprocess_enabled()


def test_l1_cache_reports_hits_misses_and_evictions() -> None:
    metrics = Metrics()
    counts = CacheAndRedisCounters()
    cache = LocalAccountCache(size=2, metrics=counts)
    assert cache.lookup("a") is None
    cache.put(account("a"))
    cache.put(account("b"))
    assert cache.lookup("a") is not None
    cache.put(account("c"))  # full: one entry goes
    cache.put(account("c"))  # an update, no eviction
    assert sample(metrics, "banking_es_cache_requests_total", level="l1", result="hit") == 0
    metrics.export_cache(counts, len(cache), cache.approximate_bytes())
    assert sample(metrics, "banking_es_cache_requests_total", level="l1", result="hit") == 1
    assert sample(metrics, "banking_es_cache_requests_total", level="l1", result="miss") == 1
    assert sample(metrics, "banking_es_cache_evictions_total", level="l1") == 1
    assert cache.evictions == 1
    assert len(cache) == 2


def test_each_app_has_its_own_counts() -> None:
    first, second = Metrics(), Metrics()
    first.observe_command("Deposit", "ok")
    assert sample(first, "banking_es_commands_total", command="Deposit", outcome="ok") == 1
    assert sample(second, "banking_es_commands_total", command="Deposit", outcome="ok") == 0


def test_event_helpers_count_and_log_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    with caplog.at_level(logging.INFO, logger="banking_es.events"):
        record_rate_limited(metrics, "client", client_id="app-1")
        record_login(metrics, "locked", user_id="u-1")
        record_login(metrics, "success", user_id="u-1")
        record_dead_letter(metrics, "banking-es.events", reason="bad payload", attempts=5)
    assert sample(metrics, "banking_es_rate_limit_rejections_total", limit="client") == 1
    assert sample(metrics, "banking_es_logins_total", outcome="locked") == 1
    assert sample(metrics, "banking_es_logins_total", outcome="success") == 1
    assert sample(metrics, "banking_es_dead_letters_total", topic="banking-es.events") == 1
    reasons = [getattr(r, "reason", None) for r in caplog.records]
    assert reasons == ["rate_limited", None, None, "bad payload"]
    with pytest.raises(ValueError, match="login outcome"):
        record_login(metrics, "maybe")


class _Store:
    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.queue_length = 3

    async def outbox_stats(self) -> OutboxStats:
        if self.hang:
            await asyncio.Event().wait()
        return OutboxStats(4, datetime(2030, 1, 1, tzinfo=UTC))


class _Projections:
    async def status(self) -> list[ProjectionStatus]:
        return [ProjectionStatus("transactions", 7, 10, 3, 1.5, None)]


async def test_gauges_are_read_on_refresh() -> None:
    metrics = Metrics()
    await refresh_gauges(
        metrics, _Store(), _Projections(), FakeClock(EPOCH + timedelta(seconds=30))
    )
    assert sample(metrics, "banking_es_projection_position", projection="transactions") == 7
    assert sample(metrics, "banking_es_projection_lag_events", projection="transactions") == 3
    assert sample(metrics, "banking_es_projection_lag_seconds", projection="transactions") == 1.5
    assert sample(metrics, "banking_es_eventstore_head_position") == 10
    assert sample(metrics, "banking_es_outbox_backlog") == 4
    assert sample(metrics, "banking_es_outbox_oldest_age_seconds") == 30
    assert sample(metrics, "banking_es_eventstore_queue_length") == 3


async def test_a_hanging_database_does_not_hang_the_scrape() -> None:
    metrics = Metrics()
    started = time.perf_counter()
    await refresh_gauges(
        metrics,
        _Store(hang=True),
        _Projections(),
        FakeClock(EPOCH + timedelta(seconds=30)),
        timeout=0.1,
    )
    assert time.perf_counter() - started < 0.5
    assert sample(metrics, "banking_es_gauge_refresh_errors_total", source="outbox") == 1
    assert sample(metrics, "banking_es_projection_position", projection="transactions") == 7


def test_dashboard_and_alerts_use_only_metrics_that_are_declared() -> None:
    """Declared, at least (tests/integration/test_metrics_exported.py: exported)."""
    exposition = generate_latest(Metrics().registry).decode()
    used = named(dashboard_expressions() + alert_expressions())
    assert used, "no metric referenced"
    assert missing(used, exposition) == set(NOT_YET_EXPORTED)
    alerts = (ROOT / "deploy" / "alerts.yml").read_text()
    for alert in (
        "ProjectionLagging",
        "OutboxOld",
        "DeadLetters",
        "HighErrorRate",
        "HighLatencyP99",
        "RedisBreakerOpen",
        "RateLimitSurge",
        "ProjectionsLeaderMissing",
        "RelayLeaderMissing",
        "DeadLettersGrowing",
        "ShardsUnowned",
    ):
        assert f"alert: Banking{alert}" in alerts


def test_each_dashboard_panel_names_its_alert_or_why_it_has_none() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) > 20
    drawn: set[str] = set()
    for panel in panels:
        description = panel.get("description", "")
        assert description.startswith(("Alert ", "Alerts ", "No alert")), panel["title"]
        named_alerts = set(re.findall(r"\bBanking[A-Za-z0-9]+", description))
        assert named_alerts <= alerts, (panel["title"], named_alerts - alerts)
        if not description.startswith("No alert"):
            assert named_alerts, panel["title"]
            drawn |= named_alerts
    assert drawn == alerts  # every rule has the panel that shows what it watches


def test_serve_prepares_an_empty_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_DIR, raising=False)
    parent = tmp_path / "data" / "prometheus-multiproc"
    gone = parent / "999999999"  # a server that is not running any more
    gone.mkdir(parents=True)
    (gone / "counter_1.db").write_bytes(b"stale")
    alive = parent / "1"  # pid 1 runs: another server's directory is left alone
    alive.mkdir()
    made = prepare_multiprocess_dir(tmp_path / "data")
    assert made == parent / str(os.getpid())
    assert made.is_dir()
    assert list(made.iterdir()) == []
    assert os.environ[ENV_DIR] == str(made.resolve())
    assert not gone.exists()
    assert alive.exists()
    monkeypatch.delenv(ENV_DIR)

    chosen = tmp_path / "operator-chosen"
    chosen.mkdir()
    (chosen / "counter_123.db").write_bytes(b"stale")
    (chosen / "notes.txt").write_text("kept")
    monkeypatch.setenv(ENV_DIR, str(chosen))
    assert prepare_multiprocess_dir(tmp_path / "data") == chosen
    assert sorted(p.name for p in chosen.iterdir()) == ["notes.txt"]


def test_cache_counts_reach_prometheus_once_each_at_export() -> None:
    """The hot path counts plain integers; each export adds only what is new."""
    metrics, counts = Metrics(), CacheAndRedisCounters()
    for name, label in [
        ("page_cache_hits", "l2"),
        ("page_cache_misses", "l1"),
        ("cache_invalidations", "pubsub"),
        ("redis_shed", "get"),
        ("redis_rejected", "get"),
        ("dedup", "claimed"),
        ("cache_warmed", ""),
        ("cache_l2_dropped", ""),
        ("cache_evictions", "l1"),
        ("redis_errors", "get"),
        ("redis_breaker_transitions", "open"),
    ]:
        counts.inc(name, label)
    counts.redis_latency.observe(0.002)
    counts.redis_latency.observe(5.0)
    cache = LocalAccountCache(size=10, metrics=counts)
    cache.put(account("a"))
    for _ in range(2):  # the second export adds nothing
        metrics.export_cache(counts, len(cache), cache.approximate_bytes())
    p = "banking_es_"
    assert sample(metrics, p + "page_cache_requests_total", level="l2", result="hit") == 1
    assert sample(metrics, p + "page_cache_requests_total", level="l1", result="miss") == 1
    assert sample(metrics, p + "cache_invalidations_total", source="pubsub") == 1
    assert sample(metrics, p + "redis_shed_total", operation="get") == 1
    assert sample(metrics, p + "redis_rejected_total", operation="get") == 1
    assert sample(metrics, p + "dedup_total", outcome="claimed") == 1
    assert sample(metrics, p + "cache_warmed_total") == 1
    assert sample(metrics, p + "cache_l2_dropped_total") == 1
    assert sample(metrics, p + "cache_evictions_total", level="l1") == 1
    assert sample(metrics, p + "cache_errors_total", level="l2") == 1
    assert sample(metrics, p + "redis_breaker_transitions_total", state="open") == 1
    assert sample(metrics, p + "redis_latency_seconds_count") == 2
    assert sample(metrics, p + "redis_latency_seconds_bucket", le="0.0025") == 1
    assert sample(metrics, p + "redis_latency_seconds_bucket", le="+Inf") == 2
    assert sample(metrics, p + "redis_latency_seconds_sum") == pytest.approx(5.002)
    assert sample(metrics, p + "cache_entries", level="l1") == 1
    assert 100 < sample(metrics, p + "cache_memory_bytes", level="l1") < 10_000
    counts.inc("dedup", "claimed")
    metrics.export_cache(counts)
    assert sample(metrics, p + "dedup_total", outcome="claimed") == 2


def test_l1_memory_grows_with_the_entries_and_reading_it_is_not_a_use() -> None:
    cache = LocalAccountCache(size=3, metrics=CacheAndRedisCounters())
    assert cache.approximate_bytes() == 0
    for name in ("a", "b", "c"):
        cache.put(account(name))
    three = cache.approximate_bytes()
    cache.invalidate("c")
    assert 0 < cache.approximate_bytes() < three
    cache.put(account("c"))
    assert cache.lookup("a") is not None  # least recently used now: "b"
    cache.approximate_bytes()  # reads every entry, but uses none
    cache.put(account("d"))
    assert cache.peek("b") is None
    assert cache.peek("a") is not None
