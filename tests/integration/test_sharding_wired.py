"""Sharding in the composition root: off without INSTANCE_URL (one instance owns every
shard, nothing else changes); on with it, the server holds its share of the shards, reports
`shards` and `locks` in readiness and `banking_es_shards_owned`, and a graceful close hands
its shards back at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.api_support import make_settings, running_services

from banking_es.bootstrap.shards import sharding_on
from banking_es.config import SettingsError
from banking_es.db.postgres import PostgresDatabase
from banking_es.shards.leases import ShardLeases

CLUSTER = {"instance_url": "http://127.0.0.1:3999", "cluster_secret": "s" * 32}


def _owned_gauge(services: Any) -> float:
    return float(services.metrics.shards_owned._value.get())


async def test_without_instance_url_one_instance_owns_every_shard(tmp_path: Path) -> None:
    async with running_services(tmp_path) as services:
        assert services.sharding is None
        assert "shards" not in services.health.names
        assert _owned_gauge(services) == services.settings.shard_count


@pytest.mark.parametrize(
    ("database", "changes", "message"),
    [
        ("sqlite", {}, "needs PostgreSQL"),
        ("postgres", {"cluster_secret": None}, "needs CLUSTER_SECRET"),
        ("postgres", {"workers": 2}, "needs WORKERS=1"),
    ],
)
def test_instance_url_with_a_setting_instances_cannot_share_is_refused(
    tmp_path: Path, database: str, changes: dict[str, Any], message: str
) -> None:
    url = "postgresql://x@127.0.0.1/x" if database == "postgres" else None
    settings = make_settings(tmp_path, url, **{**CLUSTER, **changes})
    with pytest.raises(SettingsError, match=message):
        sharding_on(settings)


@pytest.mark.postgres
async def test_with_instance_url_the_server_holds_its_shards_and_hands_them_back(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_services(
        tmp_path, pg_url, instance_id="solo", shard_lease_ttl=1.0, **CLUSTER
    ) as services:
        assert services.sharding is not None
        manager = services.sharding.manager
        assert sorted(manager.owned) == list(range(16))
        ready = await services.health.run()
        assert ready.components["shards"]["status"] == "ok"
        assert ready.components["shards"]["owned"] == list(range(16))
        assert ready.components["locks"] == {"status": "ok"}
        services.export_metrics()
        assert _owned_gauge(services) == 16
    db = await PostgresDatabase.connect(pg_url, min_size=1, max_size=1)
    try:
        states = await ShardLeases(db, ttl=1.0).states()
    finally:
        await db.close()
    assert {s.status for s in states} == {"available"}  # released at close, not lapsed
