"""Background tasks: the one way the service stops them."""

from __future__ import annotations

import asyncio
from typing import Any

#: How long `cancel` waits for a cancelled task before it asks again.
RECANCEL_S = 0.1


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended (None or a finished task: nothing to do).

    A cancellation can be lost: Python 3.11's `asyncio.wait_for` drops one that arrives just
    as the call it waits for completes, and the task then goes on (to wait forever for work
    that never comes: a hung shutdown, seen in the tests). So the cancellation is repeated
    every `RECANCEL_S` until the task has ended. An error the task ended with other than its
    cancellation is raised here.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_S)
    if not task.cancelled():
        task.result()  # its error, if it ended with one


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """`cancel` every task of `tasks`, all at once; the first error among them is raised."""
    results = await asyncio.gather(*(cancel(task) for task in tasks), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
