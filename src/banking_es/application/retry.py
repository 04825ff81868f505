"""The conflict and retry policy of the command handlers.

A version conflict caused by another process is decided again from the state the
winner's notice brings (waiting a moment for it), or else from a read of the store,
until `retry_budget` seconds have passed: then the command fails as unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from banking_es.application.errors import ServiceUnavailable
from banking_es.eventstore.base import AppendedElsewhere, ConcurrencyError

log = logging.getLogger(__name__)


class RetryPolicy:
    """Budgets and waits between attempts after version conflicts."""

    def __init__(self, retry_budget: float) -> None:
        self.retry_budget = retry_budget
        #: Chunks that lost a conflict to another process, waiting for its notice:
        #: stream -> [(the version it reached, woken when a notice says so)].
        self._awaiting: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}

    def deadline(self) -> float:
        """When an attempt that starts now runs out of budget (loop time)."""
        return asyncio.get_running_loop().time() + self.retry_budget

    def check_budget(self, deadline: float, attempt: int) -> None:
        if asyncio.get_running_loop().time() >= deadline:
            log.warning(
                "giving up after %d conflicting attempts: retry budget of %.1fs exhausted",
                attempt,
                self.retry_budget,
                extra={"reason": "retry_budget_exhausted", "attempts": attempt},
            )
            raise ServiceUnavailable("the account is too busy right now; retry shortly")

    async def backoff(self, deadline: float, attempt: int) -> None:
        self.check_budget(deadline, attempt)
        await asyncio.sleep(random.uniform(0, backoff_limit(attempt)))

    async def await_notice(self, stream_id: str, version: int, attempt: int) -> None:
        """Until another process's notice has brought `stream_id` to `version` here (see
        `wake`), or a backoff's time has passed (no notice: read the store)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (version, future)
        self._awaiting.setdefault(stream_id, []).append(entry)
        limit = backoff_limit(attempt)
        try:
            async with asyncio.timeout(random.uniform(limit / 2, limit)):
                await future
        except TimeoutError:
            pass
        finally:
            waiting = self._awaiting.get(stream_id)
            if waiting is not None and entry in waiting:
                waiting.remove(entry)
                if not waiting:
                    del self._awaiting[stream_id]

    def wake(self, appended: Sequence[AppendedElsewhere]) -> None:
        """Notices arrived: wake the chunks waiting for these streams' versions."""
        if not self._awaiting:
            return
        for stream in appended:
            waiting = self._awaiting.get(stream.stream_id)
            if waiting is None:
                continue
            for target, future in waiting:
                if target <= stream.version and not future.done():
                    future.set_result(None)


def backoff_limit(attempt: int) -> float:
    """The longest wait after the `attempt`th conflict: 2 ms per attempt, at most 50 ms."""
    return min(0.05, 0.002 * attempt)


def log_conflict(what: str, stream_id: str, attempt: int, exc: ConcurrencyError) -> None:
    log.info(
        "version conflict on account %s (another process wrote first): %s; retrying %s, attempt %d",
        stream_id,
        exc,
        what,
        attempt,
        extra={"reason": "concurrency_conflict", "account_id": stream_id, "attempt": attempt},
    )
