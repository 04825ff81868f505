"""The client that forwards commands to their shard's owner (api/forwarding.py): HTTP/1.1 over
kept-alive connections to each owner, one request at a time on each, answers parsed by
httptools (uvicorn's parser). httpx's pool (httpcore 1.0) scans every connection for every
request and polls each idle socket, so its cost per request grew with the requests in flight
(docs/performance.md, "Row 8: two instances"). It offers the part of `httpx.AsyncClient`
that forwarding uses (`request`, `aclose`) and raises httpx's transport errors, so a test
can put an httpx client with an ASGI transport in its place.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit

import httptools
import httpx

#: Bytes read from a socket at a time.
_READ = 65536


class Answer:
    """An owner's answer: status, headers in order (names as sent), body."""

    def __init__(self) -> None:
        self.status_code = 0
        self.raw: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    @property
    def content(self) -> bytes:
        return b"".join(self.body)

    @property
    def headers(self) -> Answer:
        return self

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self.raw)

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        # Asked here: once the message is complete the parser has reset and says no.
        self.status_code = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """Not closed by the owner while it was idle (its keep-alive timeout)."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def exchange(self, request: bytes) -> Answer:
        """Send `request` and read its answer."""
        self.writer.write(request)
        answer = Answer()
        while not answer.complete:
            data = await self.reader.read(_READ)
            if not data:
                raise httpx.RemoteProtocolError("the owner closed the connection")
            try:
                answer.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise httpx.RemoteProtocolError(f"a malformed answer: {exc}") from exc
        return answer

    def close(self) -> None:
        self.writer.close()


class ForwardClient:
    """Kept-alive connections per owner (`host:port`), at most `max_idle` kept idle each and
    `max_connections` exchanges in flight in all (the others wait, within the timeout)."""

    def __init__(self, timeout: float, max_idle: int = 100, max_connections: int = 200) -> None:
        self.timeout = timeout
        self.max_idle = max_idle
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}

    async def request(
        self, method: str, url: str, *, content: bytes, headers: list[tuple[str, str]]
    ) -> Answer:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"content-length: {len(content)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content
        idle = self._idle.setdefault((host, port), deque())
        connection = None
        try:
            async with asyncio.timeout(self.timeout), self._slots:
                while idle and connection is None:
                    connection = idle.pop()  # the most recently used: the least likely closed
                    if not connection.usable():
                        connection.close()
                        connection = None
                if connection is None:
                    try:
                        connection = _Connection(*await asyncio.open_connection(host, port))
                    except OSError as exc:
                        raise httpx.ConnectError(str(exc)) from exc
                answer = await connection.exchange(request)
        except TimeoutError:
            if connection is not None:
                connection.close()
            raise httpx.ReadTimeout(f"no answer from {host}:{port} in {self.timeout}s") from None
        except (OSError, httpx.HTTPError) as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, httpx.HTTPError):
                raise
            raise httpx.ReadError(str(exc)) from exc
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            if connection is not None:
                connection.close()
            raise
        if answer.keep_alive and len(idle) < self.max_idle:
            idle.append(connection)
        else:
            connection.close()
        return answer

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
