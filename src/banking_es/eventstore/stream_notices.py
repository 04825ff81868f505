"""Following other processes' appends: "these streams moved" notices from PostgreSQL.

Each PostgreSQL batch notifies `STREAMS_CHANNEL` with the new version of every stream it
wrote (`eventstore/postgres.py`). `StreamNotices` holds one dedicated connection that
LISTENs and hands the versions of the other processes' batches to `on_versions` (the
account service marks its cached copies behind). Losing the connection loses notices,
which costs conflicts, never correctness; it reconnects every `RECONNECT_S` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from banking_es.eventstore.postgres import STREAMS_CHANNEL, parse_notice

log = logging.getLogger(__name__)

RECONNECT_S = 1.0


class StreamNotices:
    """LISTENs for stream notices on its own connection while started."""

    def __init__(
        self, url: str, origin: str, on_versions: Callable[[Mapping[str, int]], None]
    ) -> None:
        self.url = url
        self.origin = origin
        self.on_versions = on_versions
        self.received = 0
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()  # here, not in the task: a cancelled connect leaks its socket
        self._task = asyncio.create_task(self._keep(), name="stream-notices")

    @property
    def listening(self) -> bool:
        return self._conn is not None

    async def _keep(self) -> None:
        while True:
            await self._lost.wait()
            await asyncio.sleep(RECONNECT_S)
            await self._connect()

    async def _connect(self) -> None:
        from banking_es.db.postgres import listen

        self._lost.clear()
        try:
            self._conn = await listen(self.url, STREAMS_CHANNEL, self._notified, self._on_lost)
        except Exception as exc:  # the database may be away: try again shortly
            log.warning("cannot LISTEN for stream notices (retrying): %s", exc)
            self._lost.set()

    def _notified(self, payload: str) -> None:
        origin, versions = parse_notice(payload)
        if origin != self.origin and versions:
            self.received += 1
            self.on_versions(versions)

    def _on_lost(self) -> None:
        self._conn = None
        self._lost.set()

    async def stop(self) -> None:
        from banking_es.db.postgres import close_quietly

        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await close_quietly(self._conn)
        self._conn = None
