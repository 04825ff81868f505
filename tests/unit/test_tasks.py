"""`tasks.cancel` and `cancel_all`: background tasks end, and their errors are not lost."""

from __future__ import annotations

import asyncio

import pytest

from banking_es import tasks


async def test_cancel_waits_for_the_task_to_clean_up() -> None:
    cleaned = asyncio.Event()

    async def loop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # a cleanup that takes a while (a consumer leaving)
            cleaned.set()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await tasks.cancel(task)
    assert cleaned.is_set()
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
