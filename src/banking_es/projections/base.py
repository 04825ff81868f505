"""The `Projection` port: a read model fed by batches of recorded events.

The runner (`runner.py`) calls `apply` inside the transaction that also moves the
projection's checkpoint, so a batch takes effect exactly once. `reset` deletes what
was derived from events after a position, before a rebuild replays them. A
`RowProjection` also takes the events as the store's rows (`apply_rows`), which is what
the runner reads; it may remember what it wrote between the runner's batches (`forget`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from banking_es.db.base import Connection
from banking_es.eventstore.base import EventRow, RecordedEvent


class Projection(Protocol):
    """A read model kept in the database, derived from the event store."""

    #: The checkpoint's name; unique among the projections of a runner.
    name: str

    async def apply(
        self,
        conn: Connection,
        events: Sequence[RecordedEvent],
        *,
        only_types: frozenset[str] | None = None,
    ) -> None:
        """Apply `events` (in position order) inside the caller's transaction.

        With `only_types`, write rows only for events of those types, but still use the
        other events for running state (such as balances). Applying an event twice has
        no further effect.
        """
        ...

    async def reset(
        self, conn: Connection, from_position: int, types: frozenset[str] | None
    ) -> None:
        """Delete the rows derived from events with position > `from_position`.

        With `types`, only what was derived from events of those types.
        """
        ...


@runtime_checkable
class RowProjection(Projection, Protocol):
    """A projection that also applies events as stored rows (`EventStore.read_rows`).

    The runner reads its batches as rows, which cost less to read and to hold than
    RecordedEvents; a projection that decodes only the rows it uses, as it goes, makes a
    large batch (a rebuild's) much cheaper than a list of RecordedEvents would. Any other
    projection gets the decoded events.
    """

    async def apply_rows(self, conn: Connection, rows: Sequence[EventRow]) -> None:
        """The same as `apply(conn, [decode_row(row) for row in rows])`, except that it may
        take what it wrote in earlier `apply_rows` calls (the last row of each account) from
        memory instead of reading it back: the runner calls it only for its batches in
        checkpoint order, and `forget()` first whenever its rows may have changed otherwise
        (another process or a rebuild moved the checkpoint, a batch rolled back)."""
        ...

    def forget(self) -> None:
        """Drop what `apply_rows` remembers; the next batch reads its rows again."""
        ...
