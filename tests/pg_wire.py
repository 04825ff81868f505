"""The messages a PostgreSQL client sends (the frontend side of protocol 3.0), read off the
wire by a `TcpProxy` tap, to cut a connection at the COMMIT of a chosen transaction."""

from __future__ import annotations

import struct

from tests.tcp_proxy import Tap, Verdict

#: The start-up message's protocol version (3.0); the untyped messages before it (SSL and
#: GSS encryption requests, a cancel request) carry other codes there.
_PROTOCOL_3 = 196608
#: The statements of a transaction that wrote events with idempotency records.
_WRITES = frozenset({"banking_es_append_batch", "INSERT INTO idempotency_keys"})


class FrontendReader:
    """Splits a client's bytes into messages: (type, body); the start-up messages, which have
    no type byte, come as (b"", body)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buffer += data
        messages = []
        while True:
            if not self._started:
                if len(self._buffer) < 8:
                    return messages
                (length,) = struct.unpack("!I", self._buffer[:4])
                if len(self._buffer) < length:
                    return messages
                body, self._buffer = self._buffer[4:length], self._buffer[length:]
                self._started = struct.unpack("!I", body[:4])[0] == _PROTOCOL_3
                messages.append((b"", body))
                continue
            if len(self._buffer) < 5:
                return messages
            (length,) = struct.unpack("!I", self._buffer[1:5])
            if len(self._buffer) < 1 + length:
                return messages
            kind, body = self._buffer[:1], self._buffer[5 : 1 + length]
            self._buffer = self._buffer[1 + length :]
            messages.append((kind, body))


def _strings(body: bytes, count: int) -> list[str]:
    """The first `count` NUL-terminated strings of a message body."""
    return [part.decode(errors="replace") for part in body.split(b"\0", count)[:count]]


class AppendCommitCutter:
    """Cuts connections at the COMMIT of transactions that wrote events: that called
    `banking_es_append_batch` and then stored idempotency records (which the store does only
    for the appends it wrote). While `armed`, every `every`th such COMMIT, `limit` times in
    all, alternately before the COMMIT reaches the server (it rolls back) and after the
    server answered it (committed, but the client never hears so). `TcpProxy(tap=cutter)`.
    """

    def __init__(self, every: int, limit: int) -> None:
        self.every = every
        self.limit = limit
        self.armed = False
        self.commits = 0
        #: "before" or "after", for each cut so far.
        self.cuts: list[str] = []

    def __call__(self) -> Tap:
        return _AppendWatch(self)

    def decide(self) -> Verdict:
        if not self.armed:
            return "pass"
        self.commits += 1
        if len(self.cuts) >= self.limit or self.commits % self.every:
            return "pass"
        self.cuts.append("before" if len(self.cuts) % 2 == 0 else "after")
        return "cut" if self.cuts[-1] == "before" else "cut_after_answer"


class _AppendWatch:
    """One connection's prepared statements, and what its transaction ran."""

    def __init__(self, cutter: AppendCommitCutter) -> None:
        self.cutter = cutter
        self.reader = FrontendReader()
        self.statements: dict[str, str] = {}
        self.ran: set[str] = set()

    def sent(self, data: bytes) -> Verdict:
        verdict: Verdict = "pass"
        for kind, body in self.reader.feed(data):
            if kind == b"P":  # Parse: statement name, query
                name, query = _strings(body, 2)
                self.statements[name] = query
            elif kind == b"B":  # Bind: portal, statement name
                _, name = _strings(body, 2)
                query = self.statements.get(name, "")
                self.ran |= {mark for mark in _WRITES if mark in query}
            elif kind == b"Q":  # a simple query: how asyncpg begins and ends transactions
                query = _strings(body, 1)[0].strip().upper()
                if query.startswith("COMMIT") and self.ran == _WRITES:
                    verdict = self.cutter.decide()
                if query.startswith(("BEGIN", "START", "COMMIT", "ROLLBACK")):
                    self.ran = set()
        return verdict
