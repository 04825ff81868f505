"""Background tasks: the one way the service stops them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended (None or a finished task: nothing to do).

    An error the task ended with other than its cancellation is raised here. The wait has
    no limit: a task may need a while to clean up (a Kafka consumer leaving its group). A
    cancellation can also be lost, though: Python 3.11's `asyncio.wait_for` drops one that
    arrives just as the call it waits for completes, and a loop then goes on waiting for its
    next work, forever. So the service waits with `asyncio.timeout` (which keeps it), and a
    loop around calls that might lose one (redis-py's) also ends on a flag of its own.
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """`cancel` every task of `tasks`, all at once; the first error among them is raised."""
    results = await asyncio.gather(*(cancel(task) for task in tasks), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
