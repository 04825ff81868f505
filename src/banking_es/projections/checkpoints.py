"""Checkpoints of the store-following projections: one row per projection in
`projection_checkpoints`, written in the transaction of the rows it covers; the advisory-lock
key of each projection; and their status (lag) for readiness, metrics and the CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from banking_es.application.ports import ProjectionStatus
from banking_es.db.base import Connection, Database
from banking_es.eventstore.base import EventStore


def lock_key(name: str) -> int:
    """The PostgreSQL advisory-lock key (a signed bigint) of the projection `name`."""
    digest = hashlib.blake2b(f"banking_es.projection:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def read_checkpoint(conn: Connection, name: str) -> int:
    value = await conn.fetchval("SELECT position FROM projection_checkpoints WHERE name = $1", name)
    return int(value) if value is not None else 0


async def write_checkpoint(conn: Connection, name: str, position: int) -> None:
    await conn.execute(
        "INSERT INTO projection_checkpoints (name, position, updated_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
        " updated_at = excluded.updated_at",
        name,
        position,
        datetime.now(UTC),
    )


async def checkpoint_status(
    db: Database, store: EventStore, names: list[str]
) -> list[ProjectionStatus]:
    """Each store-following projection's checkpoint, lag in events and age of the oldest
    event not yet applied."""
    rows = await db.fetch("SELECT name, position, updated_at FROM projection_checkpoints")
    found = {r["name"]: r for r in rows}
    head = await store.head_position()
    now = datetime.now(UTC)
    result = []
    for name in names:
        row = found.get(name)
        position = int(row["position"]) if row is not None else 0
        lag_seconds = 0.0
        if position < head:
            oldest = await store.read_all(position, 1)
            if oldest:
                lag_seconds = max(0.0, (now - oldest[0].recorded_at).total_seconds())
        result.append(
            ProjectionStatus(
                name=name,
                position=position,
                head=head,
                lag_events=max(0, head - position),
                lag_seconds=lag_seconds,
                updated_at=row["updated_at"] if row is not None else None,
            )
        )
    return result


async def wait_for_checkpoints(
    db: Database, names: list[str], position: int, timeout: float, nudge: Callable[[], None]
) -> bool:
    """Wait until the checkpoint of every projection in `names` is at `position` or beyond,
    calling `nudge` (wake the runner) between looks; False after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await db.fetch("SELECT name, position FROM projection_checkpoints")
        positions = {r["name"]: int(r["position"]) for r in rows}
        if all(positions.get(name, 0) >= position for name in names):
            return True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        nudge()
        await asyncio.sleep(min(0.02, remaining))
