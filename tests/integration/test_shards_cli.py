"""`banking-es shards status` and `banking-es shards move` on a real database file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from tests.auth import run_cli

from banking_es.db.sqlite import SqliteDatabase
from banking_es.shards.leases import ShardLeases


async def _claim(path: Path, shard: int | None, owner: str) -> None:
    """Register `owner` as a live instance and let it claim `shard` (None: none)."""
    db = await SqliteDatabase.connect(path)
    try:
        leases = ShardLeases(db, ttl=60)
        await leases.register(owner, "http://127.0.0.1:3001")
        if shard is not None:
            assert await leases.claim(shard, owner) is not None
    finally:
        await db.close()


def test_status_shows_the_map_and_move_asks_for_a_handover(tmp_path: Path) -> None:
    path = tmp_path / "banking.db"
    env = {"DATABASE_URL": f"sqlite:///{path}", "SHARD_COUNT": "8"}
    assert run_cli(["migrate"], tmp_path, **env).returncode == 0
    asyncio.run(_claim(path, 5, "api-1"))

    shown = run_cli(["shards", "status", "--json"], tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    report = orjson.loads(shown.stdout)
    assert report["shard_count"] == 8
    assert [(s["shard"], s["status"], s["owner"]) for s in report["shards"] if s["owner"]] == [
        (5, "assigned", "api-1")
    ]
    assert [(i["id"], i["shards"], i["status"]) for i in report["instances"]] == [
        ("api-1", [5], "alive")
    ]
    table = run_cli(["shards", "status"], tmp_path, **env)
    assert table.returncode == 0
    assert "api-1" in table.stdout

    # A target that is not a live instance would hold the shard back for one lease ttl.
    nobody = run_cli(["shards", "move", "5", "api-2"], tmp_path, **env)
    assert nobody.returncode == 1
    assert "api-2 is not a live instance (live: api-1)" in nobody.stderr
    kept = orjson.loads(run_cli(["shards", "status", "--json"], tmp_path, **env).stdout)
    assert (kept["shards"][5]["status"], kept["shards"][5]["owner"]) == ("assigned", "api-1")

    asyncio.run(_claim(path, None, "api-2"))
    moved = run_cli(["shards", "move", "5", "api-2"], tmp_path, **env)
    assert moved.returncode == 0, moved.stderr
    after = orjson.loads(run_cli(["shards", "status", "--json"], tmp_path, **env).stdout)
    assert after["shards"][5]["status"] == "rebalancing"

    unowned = run_cli(["shards", "move", "4", "api-2"], tmp_path, **env)
    assert unowned.returncode == 1
    assert "shard 4 has no owner" in unowned.stderr
    beyond = run_cli(["shards", "move", "8", "api-2"], tmp_path, **env)
    assert beyond.returncode == 2
    assert "SHARD_COUNT is 8" in beyond.stderr
