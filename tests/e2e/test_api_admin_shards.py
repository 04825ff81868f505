"""GET /admin/shards on one instance (no INSTANCE_URL): it owns every shard."""

from __future__ import annotations

from pathlib import Path

from tests.api_support import running_app
from tests.auth import admin_headers


async def test_one_instance_owns_every_shard(tmp_path: Path) -> None:
    async with running_app(tmp_path, instance_id="solo") as (http, services):
        headers = await admin_headers(http, services, ("auditor",))
        report = (await http.get("/admin/shards", headers=headers)).json()
        assert report["shard_count"] == 16
        assert {(s["status"], s["owner"]) for s in report["shards"]} == {("assigned", "solo")}
        [instance] = report["instances"]
        assert (instance["id"], instance["shards"]) == ("solo", list(range(16)))
        assert instance["status"] == "alive"
        moved = await http.post(
            "/admin/shards/rebalance", headers=await admin_headers(http, services)
        )
        assert (moved.status_code, moved.json()) == (202, {"moves": []})
