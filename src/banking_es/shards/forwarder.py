"""The client that forwards commands to their shard's owner (api/forwarding.py): aiohttp's,
its connections kept alive, at most `max_connections` in all (the others wait, within the
timeout). `Forwarder` is what forwarding needs of it, so a test can put the other instance's
app (an ASGI transport) in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import aiohttp
from yarl import URL

#: An owner's answer: status, headers in order (repeated ones kept, names as sent), body.
Answer = tuple[int, Sequence[tuple[bytes, bytes]], bytes]

#: Seconds an idle connection is kept: less than the owner's (uvicorn's 5 s), so the owner
#: does not close one as it is taken for a request (a POST is not retried).
_KEEP_IDLE = 4.0
#: Headers aiohttp would add of its own; only the forwarded request's are sent.
_NOT_ADDED = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class Forwarder(Protocol):
    async def forward(
        self, method: str, url: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> Answer:
        """The owner's answer; a transport error or the timeout raises `aiohttp.ClientError`
        or `TimeoutError` (forwarding answers 503)."""
        ...

    async def aclose(self) -> None: ...


class HttpForwarder:
    """Forwards over HTTP with an `aiohttp.ClientSession` (made at the first request: it
    belongs to the running loop)."""

    def __init__(self, timeout: float, max_connections: int = 200) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=_KEEP_IDLE
            ),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            skip_auto_headers=_NOT_ADDED,
            auto_decompress=False,  # the owner's body goes back as it came
            raise_for_status=False,
        )

    async def forward(
        self, method: str, url: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> Answer:
        if self._session is None:
            self._session = self._open()
        # `url` is already encoded: sent as it is, not encoded again.
        target = URL(url, encoded=True)
        async with self._session.request(
            method, target, data=body, headers=list(headers)
        ) as answer:
            return answer.status, answer.raw_headers, await answer.read()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
