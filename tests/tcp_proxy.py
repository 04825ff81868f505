"""A loopback TCP proxy that can hang or stop, or cut chosen connections at a chosen
moment, to make a real dependency misbehave."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Literal, Protocol

from tests.server import free_port

#: What a tap says of bytes a client sent: forward them; drop them and cut the connection;
#: or forward them and cut the connection when the server answers, before the client hears.
Verdict = Literal["pass", "cut", "cut_after_answer"]


class Tap(Protocol):
    """Watches what the client of one connection sends (a new tap per connection)."""

    def sent(self, data: bytes) -> Verdict: ...


class _Link:
    """Both ends of one proxied connection."""

    def __init__(self, writers: list[asyncio.StreamWriter], tap: Tap | None) -> None:
        self.writers = writers
        self.tap = tap
        #: The client will not hear the server's next answer: the connection is cut then.
        self.doomed = False

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream`.

    `hang()`: connections stay open but no byte goes through (new ones are accepted and
    never answered), like a server stuck on a lock or a dead network path.
    `stop()`: the port is closed and every connection reset, like a stopped server.
    `resume()`: forward again (listening again on the same port after `stop()`).
    `tap`: makes a `Tap` for each new connection, which may have it cut.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, tap: Callable[[], Tap] | None = None
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._tap = tap
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    def hang(self) -> None:
        self._flowing.clear()

    async def stop(self) -> None:
        self._flowing.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def resume(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._flowing.set()

    async def close(self) -> None:
        await self.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        link = _Link([writer, up_writer], self._tap() if self._tap is not None else None)
        for source, sink, upstream in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pump(source, sink, link, upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: _Link,
        upstream: bool,
    ) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                verdict = link.tap.sent(data) if upstream and link.tap is not None else "pass"
                if verdict == "cut" or (link.doomed and not upstream):
                    link.cut()
                    return
                link.doomed |= verdict == "cut_after_answer"
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.transport.abort()
