"""How stored events reach a projection: a batch of stored rows, and a type-selected replay."""

from __future__ import annotations

from collections.abc import Callable

from banking_es.db.base import Connection
from banking_es.eventstore.base import EventRow, EventStore, decode_row
from banking_es.projections.base import Projection, RowProjection
from banking_es.projections.checkpoints import read_checkpoint

#: `progress(done, total)`, both counted in positions (events).
Progress = Callable[[int, int], None]


async def apply_stored(projection: Projection, conn: Connection, rows: list[EventRow]) -> None:
    """Apply a batch of stored rows, decoded unless the projection takes rows."""
    if isinstance(projection, RowProjection):
        await projection.apply_rows(conn, rows)
    else:
        await projection.apply(conn, [decode_row(row) for row in rows])


async def replay_types(
    conn: Connection,
    store: EventStore,
    projection: Projection,
    from_position: int,
    types: frozenset[str],
    progress: Progress | None,
    size: int,
) -> int:
    """Delete `projection`'s rows of `types` after the position and replay those events up to
    its checkpoint, in the caller's locked transaction (the checkpoint does not move)."""
    checkpoint = await read_checkpoint(conn, projection.name)
    start = min(from_position, checkpoint)
    await projection.reset(conn, start, types)
    total = checkpoint - start
    if progress is not None:
        progress(0, total)
    replayed = 0
    cursor = start
    while cursor < checkpoint:
        events = [e for e in await store.read_all(cursor, size) if e.position <= checkpoint]
        if not events:
            break
        await projection.apply(conn, events, only_types=types)
        replayed += sum(1 for e in events if e.type in types)
        cursor = events[-1].position
        if progress is not None:
            progress(cursor - start, total)
    return replayed
