"""What `GET /admin/shards` answers and `banking-es shards status` shows (API.md): every
shard with its status, owner, epoch and load, and every instance seen with its shards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from banking_es.shards.leases import ShardLeases


def _when(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def single_instance_report(
    instance_id: str, url: str, shard_count: int, now: datetime
) -> dict[str, Any]:
    """The same shape for one instance without sharding (no INSTANCE_URL): it owns every
    shard, and no lease is kept (epoch 0)."""
    shards = list(range(shard_count))
    return {
        "shard_count": shard_count,
        "shards": [
            {"shard": s, "status": "assigned", "owner": instance_id, "epoch": 0, "load": 0.0}
            for s in shards
        ],
        "instances": [
            {"id": instance_id, "url": url, "shards": shards, "last_seen": _when(now),
             "status": "alive"}
        ],
    }  # fmt: skip


async def shard_report(leases: ShardLeases) -> dict[str, Any]:
    """The shard map as JSON-ready data. An instance's `shards` are those it holds now
    (assigned, or being handed over); a lapsed lease is `failed` and counts for nobody."""
    states = await leases.states()
    count = await leases.shard_count()
    held: dict[str, list[int]] = {}
    for state in states:
        if state.owner is not None and state.status in ("assigned", "rebalancing"):
            held.setdefault(state.owner, []).append(state.shard)
    return {
        "shard_count": count if count is not None else len(states),
        "shards": [
            {
                "shard": state.shard,
                "status": state.status,
                "owner": state.owner,
                "epoch": state.epoch,
                "load": state.load,
            }
            for state in states
        ],
        "instances": [
            {
                "id": instance.id,
                "url": instance.url,
                "shards": held.get(instance.id, []),
                "last_seen": _when(instance.last_seen),
                "status": "alive" if instance.alive else "gone",
            }
            for instance in await leases.instances()
        ],
    }
