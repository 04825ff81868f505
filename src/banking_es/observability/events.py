"""Operational events that are both counted and logged, the same way wherever they happen.

The rate limiter, the login service and the Kafka consumer call these, so every such event
has one metric and one log line with a `reason` field, e.g.
`record_login(services.metrics, "failure", reason="invalid_credentials")`. Never pass a
password, token or request body: identify a user by id, a client by its `x-client-id`.
"""

from __future__ import annotations

import logging
from typing import Any

from banking_es.observability.metrics import LOGIN_OUTCOMES, Metrics

log = logging.getLogger("banking_es.events")


def record_rate_limited(metrics: Metrics | None, limit: str, **fields: Any) -> None:
    """A request refused with 429 `rate_limited`; `limit` names which: client, user, ip, auth."""
    if metrics is not None:
        metrics.rate_limited.labels(limit).inc()
    log.warning(
        "rate limit exceeded (%s)",
        limit,
        extra={"reason": "rate_limited", "limit": limit, **fields},
    )


def record_login(metrics: Metrics | None, outcome: str, **fields: Any) -> None:
    """A login attempt: `outcome` is success, failure or locked."""
    if outcome not in LOGIN_OUTCOMES:
        raise ValueError(f"login outcome must be one of {LOGIN_OUTCOMES}, not {outcome!r}")
    if metrics is not None:
        metrics.logins.labels(outcome).inc()
    level = logging.INFO if outcome == "success" else logging.WARNING
    log.log(level, "login %s", outcome, extra={"outcome": outcome, **fields})


def record_dead_letter(metrics: Metrics | None, topic: str, *, reason: str, **fields: Any) -> None:
    """A message given up after its retries and moved to the dead-letter topic and table."""
    if metrics is not None:
        metrics.dead_letters.labels(topic).inc()
    log.error(
        "message moved to dead letters: %s",
        reason,
        extra={"reason": reason, "topic": topic, **fields},
    )
