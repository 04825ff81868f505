"""A real `banking-es serve` with two workers: one scrape shows the sum over both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from tests.auth import sign_up
from tests.e2e.observability_support import samples, value
from tests.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REQUESTS = 80


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # serve chooses its own
    stale = tmp_path / "data" / "prometheus-multiproc" / "999999999"  # a server now gone
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"left over from an earlier run")
    # No cache warming: a worker that starts late would warm the accounts the other opened,
    # and the L1 entries would no longer add up to the accounts opened.
    process = ServerProcess(
        f"sqlite:///{tmp_path / 'banking.db'}",
        workers=2,
        workdir=tmp_path,
        CACHE_WARM_ACCOUNTS="0",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def per_process(directory: Path, name: str, **labels: str) -> dict[str, float]:
    """The value of one counter sample in each worker's file."""
    found: dict[str, float] = {}
    for path in sorted(directory.glob("counter_*.db")):
        pid = path.stem.removeprefix("counter_")
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                if sample.name == name and sample.labels == labels:
                    found[pid] = found.get(pid, 0) + sample.value
    return found


async def test_one_scrape_sums_the_counts_of_both_workers(
    server: ServerProcess, tmp_path: Path
) -> None:
    # A new connection per request, many at once: the kernel hands them to both workers.
    # Which worker accepts is the kernel's choice, so send rounds until both have served.
    assert server.process is not None
    directory = tmp_path / "data" / "prometheus-multiproc" / str(server.process.pid)
    labels = {"command": "OpenAccount", "outcome": "ok"}
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=16)
    sent = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        http.headers.update(await sign_up(http))
        for _ in range(10):
            responses = await asyncio.gather(
                *(
                    http.post("/accounts", json={"owner_name": f"M{i}", "initial_balance": "1"})
                    for i in range(REQUESTS)
                )
            )
            assert [r.status_code for r in responses] == [201] * REQUESTS
            sent += REQUESTS
            if len(per_process(directory, "banking_es_commands_total", **labels)) == 2:
                break
        # A request is counted when its response has been sent, so the client may see the
        # answer a moment before the counter moves: wait for the last one, then compare.
        route = {"route": "/accounts", "method": "POST", "status": "201"}
        for _ in range(100):
            latest = samples((await http.get("/metrics")).text)
            if value(latest, "banking_es_http_requests_total", **route) == sent:
                break
            await asyncio.sleep(0.05)
        scrapes = [samples((await http.get("/metrics")).text) for _ in range(6)]

    assert not (tmp_path / "data" / "prometheus-multiproc" / "999999999").exists()
    by_pid = per_process(directory, "banking_es_commands_total", **labels)
    assert len(by_pid) == 2, by_pid
    assert all(count > 0 for count in by_pid.values()), by_pid
    assert sum(by_pid.values()) == sent
    for scrape in scrapes:  # whichever worker answered, it shows both workers' counts
        assert value(scrape, "banking_es_commands_total", **labels) == sent
        assert (
            value(
                scrape,
                "banking_es_http_requests_total",
                route="/accounts",
                method="POST",
                status="201",
            )
            == sent
        )
        assert value(scrape, "banking_es_eventstore_events_appended_total") == sent
        # Gauges: one value, not one per worker (livemostrecent / livesum).
        assert value(scrape, "banking_es_eventstore_queue_length") == 0
        assert value(scrape, "banking_es_outbox_backlog") >= 0
        # One worker holds each lease: the sums the leader-missing alerts watch are 1.
        assert value(scrape, "banking_es_leader", role="relay") == 1
        assert value(scrape, "banking_es_leader", role="projections") == 1

    # Cache counts and sizes are exported by every worker within its export interval,
    # not only by the scraped one: the L1 entries of both workers add up.
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for _ in range(100):
            latest = samples((await http.get("/metrics")).text)
            if value(latest, "banking_es_cache_entries", level="l1") == sent:
                break
            await asyncio.sleep(0.1)
    assert value(latest, "banking_es_cache_entries", level="l1") == sent
    assert value(latest, "banking_es_cache_memory_bytes", level="l1") > 0
