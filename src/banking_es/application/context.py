"""What a command carries besides itself, and what becomes of it.

`CommandContext` says who asks and how to remember the answer; `event_metadata` and
`idempotency_records` turn it into what the store is handed with the events. Outcomes
go to `CommandOutcomes` (metrics and the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from banking_es.application.ports import Clock
from banking_es.application.results import STORED_ANSWER, Result, store_result
from banking_es.eventstore.base import IdempotencyRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IdempotencyIntent:
    """Store this command's answer under (scope, key) for `ttl_seconds`."""

    scope: str
    key: str
    fingerprint: str
    ttl_seconds: float


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who asks, how to remember the answer, and the validation rules' `warnings` that
    go with it."""

    user_id: str | None = None
    request_id: str | None = None
    idempotency: IdempotencyIntent | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Replayed:
    """The command was already executed (perhaps by another process): its stored answer."""

    record: IdempotencyRecord


def _ignore(name: str, outcome: str) -> None:
    pass


class CommandOutcomes:
    """Where the outcome of each command goes: `on_command(name, outcome)` for metrics
    (outcome in ok|rejected|conflict|failed), and failures to the log."""

    __slots__ = ("on_command",)

    def __init__(self, on_command: Callable[[str, str], None] | None = None) -> None:
        self.on_command: Callable[[str, str], None] = on_command or _ignore

    def failed(self, command: str, account_id: str | None, exc: Exception) -> None:
        self.on_command(command, "failed")
        log.warning(
            "command %s failed: %s",
            command,
            str(exc) or type(exc).__name__,
            extra={"command": command, "account_id": account_id, "reason": type(exc).__name__},
        )


def event_metadata(
    context: CommandContext, command: str, trace: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What the store keeps with each event of `command`; `trace` is the command span's W3C
    context (`tracing.trace_carrier`), which the Kafka relay's span continues."""
    metadata: dict[str, Any] = {"command": command}
    if context.user_id:
        metadata["user_id"] = context.user_id
    if context.request_id:
        metadata["request_id"] = metadata["correlation_id"] = context.request_id
    if context.idempotency:
        metadata["idempotency_key"] = context.idempotency.key
    if trace:
        metadata.update(trace)
    return metadata


def idempotency_records(
    context: CommandContext, result: Result, clock: Clock
) -> list[IdempotencyRecord]:
    """The record that remembers the command's `result`, stored with its events."""
    intent = context.idempotency
    if intent is None:
        return []
    now = clock.now()
    return [
        IdempotencyRecord(
            intent.scope,
            intent.key,
            intent.fingerprint,
            STORED_ANSWER,
            store_result(result, context.warnings, before_append=True),
            now,
            now + timedelta(seconds=intent.ttl_seconds),
        )
    ]
