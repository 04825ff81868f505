"""Logging: readable lines in a terminal, JSON lines in production (LOG_FORMAT).

Every record, whether from `logging` or `structlog`, goes through the same chain:
level, logger name, UTC timestamp, the `extra=` fields, the context of the current
request (`request_id`, set by the HTTP middleware in `REQUEST_ID`; structlog's contextvars),
then `redact`, which masks anything that looks like a secret. Tracebacks are printed
without local variables (rich's default shows them, and they may hold passwords).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from banking_es.config import Settings

#: Field names whose values are never written to a log, whatever logs them.
SECRET_FIELDS = frozenset(
    {
        "password",
        "current_password",
        "new_password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "cookie",
        "set-cookie",
        "secret",
        "jwt_secret",
        "refresh_token_secret",
        "idempotency_key",
        "idempotency-key",
        "api_key",
    }
)
REDACTED = "[redacted]"
#: Libraries whose DEBUG output contains query parameters.
QUIET_LIBRARIES = ("aiosqlite", "asyncpg", "aiokafka", "redis", "httpcore", "httpx")


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Mask the values of secret-looking fields (also one level down in dicts)."""
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
    for key, value in event_dict.items():
        if key.lower() in SECRET_FIELDS:
            event_dict[key] = REDACTED
        elif isinstance(value, dict):
            event_dict[key] = {
                k: REDACTED if str(k).lower() in SECRET_FIELDS else v for k, v in value.items()
            }
    return event_dict


#: The id of the request being served, set by the HTTP middleware: one `ContextVar.set` per
#: request instead of structlog's `bind_contextvars` (a few times dearer).
REQUEST_ID: ContextVar[str | None] = ContextVar("banking_es_request_id", default=None)


def add_request_id(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The current request's id on every line logged while it is served."""
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _chain(*, stdlib_extra: bool) -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *([structlog.stdlib.ExtraAdder()] if stdlib_extra else []),
        redact,
    ]


class _JsonOutput:
    #: The root's handler when LOG_FORMAT is json (`write_json_line` writes to it).
    handler: logging.StreamHandler[Any] | None = None


def write_json_line(logger: str, level: int, event: str, fields: Mapping[str, Any]) -> bool:
    """Write one JSON line as the chain would render it, without a `LogRecord` and the
    chain (the access log: one line per request); False when the output is not JSON.

    `fields` must hold no secret: `redact` does not run here."""
    handler = _JsonOutput.handler
    if handler is None or logging.getLogger().handlers != [handler]:
        return False
    line = {
        "event": event,
        "level": logging.getLevelName(level).lower(),
        "logger": logger,
        "timestamp": datetime.now(UTC),
        **fields,
    }
    text = orjson.dumps(line, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE).decode()
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(text)
        handler.flush()
    return True


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper())
    renderer: structlog.types.Processor
    final: list[structlog.types.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta
    ]
    if settings.effective_log_format == "json":
        final += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        final.append(renderer)
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=final, foreign_pre_chain=_chain(stdlib_extra=True)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    _JsonOutput.handler = handler if settings.effective_log_format == "json" else None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_chain(stdlib_extra=False),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Drivers that log every statement with its parameters (account data, idempotency
    # records) at DEBUG: never below INFO, whatever LOG_LEVEL says.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
