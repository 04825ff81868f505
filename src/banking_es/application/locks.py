"""In-process locks per stream, so commands for one account do not fight in the database."""

from __future__ import annotations

import asyncio
from types import TracebackType


class StreamLocks:
    """One asyncio lock per stream id, created on demand and dropped when unused.

    Several streams are always locked in sorted order, so two transfers in opposite
    directions cannot deadlock.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def hold(self, *stream_ids: str) -> _Held:
        """`async with locks.hold(a, b):` holds the locks of `a` and `b` inside the block."""
        return _Held(self, sorted(set(stream_ids)))

    def __len__(self) -> int:
        return len(self._locks)

    def in_use(self) -> list[str]:
        """The streams whose lock is held or awaited now."""
        return list(self._users)


class _Held:
    """The context manager of `StreamLocks.hold` (a class: `asynccontextmanager` cost a
    generator and two extra awaits per command)."""

    __slots__ = ("_acquired", "_locks", "_ordered")

    def __init__(self, locks: StreamLocks, ordered: list[str]) -> None:
        self._locks = locks
        self._ordered = ordered
        self._acquired: list[str] = []

    async def __aenter__(self) -> None:
        locks, users = self._locks._locks, self._locks._users
        for stream_id in self._ordered:
            users[stream_id] = users.get(stream_id, 0) + 1
            if stream_id not in locks:
                locks[stream_id] = asyncio.Lock()
        try:
            for stream_id in self._ordered:
                await locks[stream_id].acquire()
                self._acquired.append(stream_id)
        except BaseException:  # cancelled while waiting: give back what was taken
            self._release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        locks, users = self._locks._locks, self._locks._users
        for stream_id in reversed(self._acquired):
            locks[stream_id].release()
        self._acquired.clear()
        for stream_id in self._ordered:
            users[stream_id] -= 1
            if not users[stream_id]:
                del users[stream_id]
                del locks[stream_id]
