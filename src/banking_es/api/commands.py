"""Running a write command from a route, with `Idempotency-Key` semantics (API.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import orjson
from starlette.responses import Response

from banking_es.api.caller import Caller
from banking_es.api.errors import render_known_error
from banking_es.api.problems import ApiError
from banking_es.api.routing import Call
from banking_es.application.accounts import CommandContext, IdempotencyIntent, Replayed
from banking_es.application.errors import ApplicationError, ServiceUnavailable
from banking_es.application.idempotency import IdempotencyService, fingerprint
from banking_es.domain.errors import DomainError
from banking_es.eventstore.base import IdempotencyRecord

T = TypeVar("T")
MAX_KEY = 255


def idempotency_key(call: Call) -> str | None:
    key = call.header(b"idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY or not all(33 <= ord(c) <= 126 or c == " " for c in key):
        raise ApiError(
            400,
            "validation_error",
            "Idempotency-Key must be 1-255 printable ASCII characters",
            errors=[
                {"field": "Idempotency-Key", "message": "must be 1-255 printable ASCII characters"}
            ],
        )
    return key


def _replay(record: IdempotencyRecord, location_prefix: str | None) -> Response:
    assert isinstance(record.body, bytes)
    media = "application/json" if record.status < 400 else "application/problem+json"
    headers = {"Idempotent-Replayed": "true"}
    if record.status == 201 and location_prefix:
        created = orjson.loads(record.body).get("id")
        if created:
            headers["Location"] = f"{location_prefix}/{created}"
    return Response(record.body, status_code=record.status, media_type=media, headers=headers)


async def run_command(
    call: Call,
    idempotency: IdempotencyService,
    *,
    status: int,
    action: Callable[[CommandContext], Awaitable[T | Replayed]],
    render: Callable[[T], bytes],
    headers: Callable[[T], dict[str, str]] | None = None,
    location_prefix: str | None = None,
) -> Response:
    """Execute `action` once per Idempotency-Key and answer with `status` and `render(result)`.

    The request's body model is dumped for the key's fingerprint only when the request has
    a key (most do not)."""
    caller = call.caller
    key = idempotency_key(call)
    if key is None:
        result = await action(CommandContext(caller.user_id, caller.request_id))
        assert not isinstance(result, Replayed)
        return _respond(status, render(result), headers(result) if headers else None)

    scope = caller.idempotency_scope
    print_ = fingerprint(call.method, call.path, msgspec.structs.asdict(call.body))
    fast = await idempotency.fast_lookup(scope, key, print_)  # Redis: no database for retries
    if fast is not None:
        return _replay(fast, location_prefix)
    try:
        response = await _run_keyed(
            idempotency,
            scope,
            key,
            print_,
            status,
            action,
            render,
            headers,
            location_prefix,
            caller,
        )
    except BaseException:
        await asyncio.shield(idempotency.release(scope, key))
        raise
    await idempotency.remember(scope, key, print_, response.status_code, bytes(response.body))
    return response


async def _run_keyed(
    idempotency: IdempotencyService,
    scope: str,
    key: str,
    print_: str,
    status: int,
    action: Callable[[CommandContext], Awaitable[T | Replayed]],
    render: Callable[[T], bytes],
    headers: Callable[[T], dict[str, str]] | None,
    location_prefix: str | None,
    caller: Caller,
) -> Response:
    """The durable path: the stored outcome, or execute once and store it."""
    existing = await idempotency.lookup(scope, key, print_)
    if existing is not None:
        return _replay(existing, location_prefix)
    with idempotency.in_flight(scope, key):
        intent = IdempotencyIntent(scope, key, print_, status, render, idempotency.ttl_seconds)
        try:
            result = await action(CommandContext(caller.user_id, caller.request_id, intent))
        except ServiceUnavailable:
            raise  # never executed: nothing to remember
        except (DomainError, ApplicationError) as exc:
            code, problem, extra_headers = render_known_error(exc)
            if code == 400 or code >= 500:
                raise  # never executed: nothing to remember
            earlier = await idempotency.save_outcome(scope, key, print_, code, problem)
            if earlier is not None:
                idempotency.check_same_request(earlier, print_)
                return _replay(earlier, location_prefix)
            return Response(
                problem,
                status_code=code,
                media_type="application/problem+json",
                headers=extra_headers,
            )
        if isinstance(result, Replayed):
            idempotency.check_same_request(result.record, print_)
            return _replay(result.record, location_prefix)
        return _respond(status, render(result), headers(result) if headers else None)


def guarded(
    check: Callable[[], Awaitable[None]],
    action: Callable[[CommandContext], Awaitable[T | Replayed]],
) -> Callable[[CommandContext], Awaitable[T | Replayed]]:
    """`action` preceded by an access check, so a 404 it answers is remembered under the
    Idempotency-Key like any other outcome without events (a 403 is not: never executed)."""

    async def run(context: CommandContext) -> T | Replayed:
        await check()
        return await action(context)

    return run


def _respond(status: int, body: bytes, headers: dict[str, str] | None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)
