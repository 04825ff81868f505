"""The forwarding client (shards/forwarder.py) against a small server on loopback: the
request carries its target as encoded and the forwarded headers as given, nothing aiohttp
would add of its own; the answer comes back whole, its headers in order with repeated ones
kept, its body as sent."""

from __future__ import annotations

import asyncio

from banking_es.shards.forwarder import HttpForwarder

ANSWER = (
    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nSet-Cookie: a=1\r\n"
    b"x-shard: 3\r\nSet-Cookie: b=2\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n"
    b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


async def test_headers_go_as_given_and_the_answer_comes_back_whole() -> None:
    requests: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        requests.append(head + await reader.readexactly(4))
        writers.append(writer)
        writer.write(ANSWER)
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    forwarder = HttpForwarder(timeout=5)
    try:
        status, headers, body = await forwarder.forward(
            "PATCH",
            # As the client encoded it: the owner must decode the target the hop signed.
            f"http://127.0.0.1:{port}/accounts/a%41b%2Fc/deposit?dry=1",
            b"{}{}",
            [("authorization", "Bearer t"), ("x-tag", "one"), ("x-tag", "two")],
        )
    finally:
        await forwarder.aclose()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
    lines = requests[0].split(b"\r\n")
    assert lines[0] == b"PATCH /accounts/a%41b%2Fc/deposit?dry=1 HTTP/1.1"
    sent = [tuple(line.split(b": ", 1)) for line in lines[1:] if b": " in line]
    names = {name.lower() for name, _ in sent}
    assert names == {b"host", b"authorization", b"x-tag", b"content-length"}, sent
    assert [v for n, v in sent if n.lower() == b"x-tag"] == [b"one", b"two"]
    assert [v for n, v in sent if n.lower() == b"content-length"] == [b"4"]
    assert requests[0].endswith(b"\r\n\r\n{}{}")
    assert status == 201
    assert [(k.lower(), v) for k, v in headers if k.lower() != b"transfer-encoding"] == [
        (b"content-type", b"application/json"),
        (b"set-cookie", b"a=1"),
        (b"x-shard", b"3"),
        (b"set-cookie", b"b=2"),
        (b"content-encoding", b"gzip"),
    ]
    assert body == b"hello world"  # not decompressed: it goes back to the client as it came
