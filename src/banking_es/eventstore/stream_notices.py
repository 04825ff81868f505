"""Following other processes' appends: PostgreSQL notices of the streams they appended to.

Each PostgreSQL batch notifies `STREAMS_CHANNEL` with the new events (or, when they do not
fit, the new version) of every stream it wrote (`eventstore/postgres.py`). `StreamNotices`
holds one dedicated connection that LISTENs and hands the other processes' appends to
`on_appended_elsewhere` (the account service brings its cached copies forward or marks
them behind). Losing the connection loses notices, which costs reads and conflicts,
never correctness; it reconnects every `RECONNECT_S` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from banking_es.eventstore.base import AppendedElsewhere
from banking_es.eventstore.notices import STREAMS_CHANNEL, parse_notice
from banking_es.tasks import cancel

log = logging.getLogger(__name__)

RECONNECT_S = 1.0


class StreamNotices:
    """LISTENs for stream notices on its own connection while started."""

    def __init__(
        self,
        url: str,
        origin: str,
        on_appended_elsewhere: Callable[[list[AppendedElsewhere]], None],
    ) -> None:
        self.url = url
        self.origin = origin
        self.on_appended_elsewhere = on_appended_elsewhere
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
        appended = parse_notice(payload, unless_from=self.origin)
        if appended:
            self.received += 1
            self.on_appended_elsewhere(appended)

    def _on_lost(self) -> None:
        self._conn = None
        self._lost.set()

    async def stop(self) -> None:
        from banking_es.db.postgres import close_quietly

        await cancel(self._task)
        self._task = None
        await close_quietly(self._conn)
        self._conn = None
