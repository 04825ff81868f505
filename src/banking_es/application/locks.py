"""In-process locks per stream, so commands for one account do not fight in the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class StreamLocks:
    """One asyncio lock per stream id, created on demand and dropped when unused.

    Several streams are always locked in sorted order, so two transfers in opposite
    directions cannot deadlock.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, *stream_ids: str) -> AsyncIterator[None]:
        ordered = sorted(set(stream_ids))
        for stream_id in ordered:
            self._users[stream_id] = self._users.get(stream_id, 0) + 1
            self._locks.setdefault(stream_id, asyncio.Lock())
        acquired: list[str] = []
        try:
            for stream_id in ordered:
                await self._locks[stream_id].acquire()
                acquired.append(stream_id)
            yield
        finally:
            for stream_id in reversed(acquired):
                self._locks[stream_id].release()
            for stream_id in ordered:
                self._users[stream_id] -= 1
                if not self._users[stream_id]:
                    del self._users[stream_id]
                    del self._locks[stream_id]

    def __len__(self) -> int:
        return len(self._locks)
