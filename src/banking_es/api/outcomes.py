"""Running a write command from a route: the `Idempotency-Key` header in, and the
command's outcome (fresh or replayed, a result or a refusal) out as a response (API.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec
import orjson
from starlette.responses import Response

from banking_es.api.errors import render_known_error
from banking_es.api.problems import ApiError
from banking_es.api.routing import Call
from banking_es.application.accounts import CommandContext, Replayed
from banking_es.application.idempotency import (
    IdempotencyKey,
    IdempotencyService,
    Outcome,
    fingerprint,
)
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


async def run_command(
    call: Call,
    idempotency: IdempotencyService,
    *,
    status: int,
    action: Callable[[CommandContext], Awaitable[T | Replayed]],
    render: Callable[[T, Sequence[str]], bytes],
    warnings: Sequence[str] = (),
    headers: Callable[[T], dict[str, str]] | None = None,
) -> Response:
    """Execute `action` once per Idempotency-Key and answer with `status` and
    `render(result, warnings)` (the validation rules' warnings, stored with the answer).

    The request's body model is dumped for the key's fingerprint only when the request has
    a key (most do not)."""
    caller = call.caller
    key = idempotency_key(call)
    keyed = None
    if key is not None:
        body = msgspec.structs.asdict(call.body) if call.body is not None else {}
        digest = fingerprint(call.method, call.path, body)
        keyed = IdempotencyKey(caller.idempotency_scope, key, digest)
    context = CommandContext(caller.user_id, caller.request_id, None, tuple(warnings))
    outcome = await idempotency.run(action, context, keyed)
    if outcome.earlier_release is not None:
        return _earlier_release(outcome.earlier_release, call.path)
    return respond(outcome, status, render, headers)


def respond(
    outcome: Outcome[T],
    status: int,
    render: Callable[[T, Sequence[str]], bytes],
    headers: Callable[[T], dict[str, str]] | None,
) -> Response:
    """The response to an outcome: the same bytes whether it is fresh or replayed."""
    extra: dict[str, str] = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    if outcome.refusal is not None:
        code, problem, refusal_headers = render_known_error(outcome.refusal)
        extra.update(refusal_headers)
        return Response(
            problem, status_code=code, media_type="application/problem+json", headers=extra or None
        )
    result = outcome.result
    assert result is not None
    if headers is not None:
        extra.update(headers(result))
    body = render(result, outcome.warnings)
    return Response(body, status_code=status, media_type="application/json", headers=extra or None)


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


def _earlier_release(record: IdempotencyRecord, path: str) -> Response:
    """A replay of a record stored by an earlier release: the response it stored."""
    media = "application/json" if record.status < 400 else "application/problem+json"
    headers = {"Idempotent-Replayed": "true"}
    if record.status == 201:
        headers["Location"] = f"{path}/{orjson.loads(record.body)['id']}"
    return Response(record.body, status_code=record.status, media_type=media, headers=headers)
