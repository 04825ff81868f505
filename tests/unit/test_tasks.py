"""`tasks.cancel`: a background task is stopped even when it loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from banking_es import tasks


async def test_a_task_that_loses_a_cancellation_is_cancelled_again() -> None:
    """As Python 3.11's `asyncio.wait_for` does when a cancellation arrives just as the call it
    waits for completes: the task goes on, and would wait forever for its next work."""
    swallowed = 0
    wake = asyncio.Event()

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await wake.wait()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.cancel(task), 2)
    assert swallowed == 1
    assert task.cancelled()


async def test_cancel_raises_what_the_task_failed_with_and_ignores_none() -> None:
    async def failing() -> None:
        raise RuntimeError("broken")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="broken"):
        await tasks.cancel(task)
    await tasks.cancel(None)


async def test_cancel_all_stops_every_task() -> None:
    running = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(3)]
    await asyncio.sleep(0)
    await tasks.cancel_all(running)
    assert all(task.cancelled() for task in running)
