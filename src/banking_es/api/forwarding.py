"""Commands run on their account shard's owner (a plain ASGI middleware, on when the services
have `sharding`). Deposits, withdrawals, closes, holds placed, the admin's account changes
(`/admin/accounts/{id}`), transfers (by their source account) and hold captures and voids (by
the hold's account, which the account service remembers or reads once) for a shard another
instance owns are forwarded once, over a kept-alive client, to the owner's `INSTANCE_URL`
with a signed hop header (identity/hops.py) naming the client's address and caller; the
owner's answer goes back unchanged. A forwarded request is trusted only with a valid hop
(else 401), is never forwarded again (a non-owner answers 503), and is limited under the
original client's address, once. Responses of these commands carry `x-shard` and
`x-served-by`, on one instance too (it owns every shard). Reads and openings run where they
arrive.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import aiohttp
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banking_es.api.problems import PROBLEM_TYPE, problem_body
from banking_es.application.errors import NotFound
from banking_es.eventstore.base import StoreUnavailable
from banking_es.identity.errors import IdentityError, Unauthenticated
from banking_es.identity.hops import HOP_HEADER, Hop, sign_hop, verify_hop
from banking_es.shards.keys import shard_of

log = logging.getLogger(__name__)

_COMMAND = re.compile(
    r"^/(?:accounts/([^/]+)/(?:deposit|withdraw|close|holds)"
    r"|admin/accounts/([^/]+)(?:/freeze|/unfreeze)?)$"
)
_HOLD = re.compile(r"^/holds/([^/]+)/(?:capture|void)$")
#: The methods of commands (`PATCH /admin/accounts/{id}` sets an overdraft limit).
_METHODS = frozenset({"POST", "PATCH"})
_TRANSFERS = "/transfers"
#: Not passed on: hop-by-hop, set again by the next server, or added by our own middleware.
_REQUEST_DROPPED = {"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                    "x-forwarded-for", "accept-encoding", HOP_HEADER}  # fmt: skip
_RESPONSE_DROPPED = {b"content-length", b"connection", b"keep-alive", b"transfer-encoding",
                     b"date", b"server", b"x-request-id", b"x-content-type-options",
                     b"content-security-policy"}  # fmt: skip


def _services(scope: Scope) -> Any:
    return getattr(getattr(scope.get("app"), "state", None), "services", None)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _source_of(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    source = data.get("from_account_id") if isinstance(data, dict) else None
    return source if isinstance(source, str) else None


async def _hold_account(services: Any, hold_id: str) -> str | None:
    """The account a hold is on, from the placements the account service remembers (None: no
    such hold, or the store cannot say; the route answers that itself)."""
    try:
        UUID(hold_id)
        return str(await services.accounts.hold_account(hold_id))
    except (ValueError, NotFound, StoreUnavailable):
        return None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (None: the client went away first)."""
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then what the client sends."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _marked(send: Send, shard: int, instance_id: str) -> Send:
    """A `send` that adds `x-shard` and `x-served-by` to the response."""
    marks = [(b"x-shard", str(shard).encode()), (b"x-served-by", instance_id.encode())]

    async def send_marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *marks]}
        await send(message)

    return send_marked


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = problem_body(status, code, message)
    headers = [(b"content-type", PROBLEM_TYPE.encode()), (b"content-length", b"%d" % len(body))]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ForwardingMiddleware:
    """Routes each command to its shard's owner (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The method first: most requests are reads, and it is the cheapest test.
        method: str = scope.get("method", "")
        services = _services(scope) if method in _METHODS and scope["type"] == "http" else None
        path = scope.get("path", "")
        command = _COMMAND.match(path) if services is not None else None
        hold = _HOLD.match(path) if services is not None and not command else None
        if services is None or not (command or hold or path == _TRANSFERS):
            await self.app(scope, receive, send)
            return
        sharding = services.sharding
        body = b""
        if sharding is not None or not (command or hold):  # only one instance needs no body
            read = await _read_body(receive)
            if read is None:  # the client went away
                return
            body = read
            receive = _replay(body, receive)
        if command:
            account = command[1] or command[2]
        elif hold:
            account = await _hold_account(services, hold[1])
        else:
            account = _source_of(body)
        if account is None:  # not a transfer or hold the API can read: its answer is the 4xx
            await self.app(scope, receive, send)
            return
        if sharding is None:  # one instance: it owns every shard
            settings = services.settings
            shard = shard_of(account, settings.shard_count)
            await self.app(scope, receive, _marked(send, shard, settings.effective_instance_id))
            return
        manager = sharding.manager
        shard = manager.shard_of(account)
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        hop_value = _header(scope, HOP_HEADER.encode())
        route = manager.route(shard)
        if hop_value is not None:
            try:
                hop = verify_hop(
                    sharding.secret, hop_value, method=method, target=target, body=body,
                    now=datetime.now(UTC),
                )  # fmt: skip
            except Unauthenticated as exc:
                await _refuse(send, 401, "unauthenticated", str(exc))
                return
            if route is not None:  # one hop only: the map moved while the request travelled
                await _refuse(send, 503, "service_unavailable", "the shard moved; retry")
                return
            # Limits and logs see the client's address, not the forwarding instance's.
            scope = {**scope, "client": (hop.client, 0)}
        elif route == "":
            await _refuse(send, 503, "service_unavailable", "the shard has no owner; retry")
            return
        elif route is not None:
            await self._forward(scope, send, services, route, target, body)
            return
        await self.app(scope, receive, _marked(send, shard, manager.instance_id))

    async def _forward(
        self, scope: Scope, send: Send, services: Any, url: str, target: str, body: bytes
    ) -> None:
        sharding = services.sharding
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        if services.rate_limiter is not None:  # behind a trusted proxy: the address it names
            address = services.rate_limiter.client_ip(scope)
        hop = Hop(sharding.manager.instance_id, address, _caller(scope, services.identity))
        method = scope["method"]
        value = sign_hop(
            sharding.secret, hop, method=method, target=target, body=body, now=datetime.now(UTC)
        )
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope.get("headers", ())
            if k.decode("latin-1") not in _REQUEST_DROPPED
        ]
        request_id = scope.get("state", {}).get("request_id")
        if request_id and _header(scope, b"x-request-id") is None:
            headers.append(("x-request-id", request_id))
        headers.append((HOP_HEADER, value))
        try:
            # The path as the client sent it (still percent-encoded), so the owner decodes the
            # same target that the hop signs.
            raw = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string", b"")
            wire = raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
            status, answer_headers, answer = await sharding.http.forward(
                method, url + wire, body, headers
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding to %s failed: %r", url, exc)
            await _refuse(send, 503, "service_unavailable", "the shard's owner did not answer")
            return
        kept = [(k, v) for k, v in answer_headers if k.lower() not in _RESPONSE_DROPPED]
        kept.append((b"content-length", b"%d" % len(answer)))
        await send({"type": "http.response.start", "status": status, "headers": kept})
        await send({"type": "http.response.body", "body": answer})


def _caller(scope: Scope, identity: Any) -> str | None:
    """The caller the bearer token names (the owner authenticates it again)."""
    authorization = _header(scope, b"authorization") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return str(identity.authenticate(token).user_id)
    except IdentityError:
        return None
