"""The forwarding client (api/forward_client.py) against small servers on loopback: answers
read whole (length or chunks), connections kept and reused, an idle connection the server
closed not reused, and each failure an httpx transport error (forwarding answers 503)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from banking_es.shards.forward_client import ForwardClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (by its content-length); b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.append(writer)
        await self.handler(reader, writer)

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:  # the connections it still has, and their handlers
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[ForwardClient]:
    forwarder = ForwardClient(timeout=1.0)
    yield forwarder
    await forwarder.aclose()


def _echo(server_list: list[Server], close_after: int | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while request := await _request(reader):
            server_list[0].requests.append(request)
            body = b'{"n": %d}' % len(server_list[0].requests)
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-shard: 3\r\n"
                b"x-shard: 4\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            served += 1
            if close_after is not None and served == close_after:
                break
        writer.close()

    return handle


async def test_answers_are_read_whole_and_connections_kept(client: ForwardClient) -> None:
    servers: list[Server] = []
    async with Server(_echo(servers)) as server:
        servers.append(server)
        url = f"http://127.0.0.1:{server.port}"
        for n in (1, 2, 3):
            answer = await client.request(
                "POST", url + "/accounts/x/deposit?a=1", content=b'{"amount": "1.00"}',
                headers=[("authorization", "Bearer t"), ("x-hop", "signed")],
            )  # fmt: skip
            assert answer.status_code == 201
            assert answer.content == b'{"n": %d}' % n
            assert ("x-shard", "3") in answer.headers.multi_items()
            assert ("x-shard", "4") in answer.headers.multi_items()  # repeated headers kept
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /accounts/x/deposit?a=1 HTTP/1.1\r\n")
        assert b"\r\nhost: 127.0.0.1:%d\r\n" % server.port in first
        assert b"\r\nauthorization: Bearer t\r\n" in first
        assert b"\r\ncontent-length: 18\r\n" in first
        assert first.endswith(b'\r\n\r\n{"amount": "1.00"}')


async def test_requests_in_flight_together_each_get_their_own_connection(
    client: ForwardClient,
) -> None:
    servers: list[Server] = []
    async with Server(_echo(servers)) as server:
        servers.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        answers = await asyncio.gather(
            *(client.request("POST", url, content=b"", headers=[]) for _ in range(5))
        )
        assert sorted(a.content for a in answers) == [b'{"n": %d}' % n for n in range(1, 6)]
        assert server.connections == 5
        await client.request("POST", url, content=b"", headers=[])
        assert server.connections == 5  # the kept ones are reused


async def test_exchanges_in_flight_are_bounded_the_others_wait() -> None:
    servers: list[Server] = []
    bounded = ForwardClient(timeout=5.0, max_connections=2)
    try:
        async with Server(_echo(servers)) as server:
            servers.append(server)
            url = f"http://127.0.0.1:{server.port}/"
            answers = await asyncio.gather(
                *(bounded.request("POST", url, content=b"", headers=[]) for _ in range(6))
            )
            assert len({a.content for a in answers}) == 6
            assert server.connections == 2
    finally:
        await bounded.aclose()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    client: ForwardClient,
) -> None:
    servers: list[Server] = []
    async with Server(_echo(servers, close_after=1)) as server:
        servers.append(server)
        url = f"http://127.0.0.1:{server.port}/"
        await client.request("POST", url, content=b"", headers=[])
        await asyncio.sleep(0.05)  # the server's close reaches the client
        answer = await client.request("POST", url, content=b"", headers=[])
        assert answer.content == b'{"n": 2}'
        assert server.connections == 2


async def test_a_chunked_answer_is_read_whole(client: ForwardClient) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async with Server(chunked) as server:
        answer = await client.request(
            "GET", f"http://127.0.0.1:{server.port}/", content=b"", headers=[]
        )
        assert (answer.status_code, answer.content) == (200, b"hello world")


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("close", httpx.RemoteProtocolError),  # closed before answering
        ("garbage", httpx.RemoteProtocolError),  # not HTTP
        ("silent", httpx.ReadTimeout),  # never answers (client timeout 1 s)
    ],
)
async def test_a_failed_exchange_is_an_httpx_transport_error(
    client: ForwardClient, behaviour: str, error: type[httpx.HTTPError]
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        if behaviour == "garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
        elif behaviour == "silent":
            await asyncio.sleep(3)
        writer.close()

    async with Server(handle) as server:
        with pytest.raises(error):
            await client.request(
                "POST", f"http://127.0.0.1:{server.port}/", content=b"", headers=[]
            )
        assert isinstance(error(""), httpx.TransportError)  # what forwarding turns into 503


async def test_no_server_is_a_connect_error(client: ForwardClient) -> None:
    async with Server(_echo([])) as server:
        port = server.port
    with pytest.raises(httpx.ConnectError):
        await client.request("POST", f"http://127.0.0.1:{port}/", content=b"", headers=[])
