"""`StreamLocks`: one holder per stream at a time, sorted acquisition, nothing left behind."""

from __future__ import annotations

import asyncio

import pytest

from banking_es.application.locks import StreamLocks


async def test_one_holder_per_stream_and_other_streams_go_ahead() -> None:
    locks = StreamLocks()
    inside: list[str] = []
    release = asyncio.Event()

    async def hold(stream_id: str, name: str) -> None:
        async with locks.hold(stream_id):
            inside.append(name)
            await release.wait()

    first = asyncio.create_task(hold("a", "first"))
    second = asyncio.create_task(hold("a", "second"))
    other = asyncio.create_task(hold("b", "other"))
    await asyncio.sleep(0.01)
    assert sorted(inside) == ["first", "other"]  # the second waits for the first
    release.set()
    await asyncio.gather(first, second, other)
    assert inside[-1] == "second"
    assert len(locks) == 0


async def test_opposite_orders_do_not_deadlock() -> None:
    locks = StreamLocks()
    done: list[int] = []

    async def transfer(source: str, target: str, n: int) -> None:
        async with locks.hold(source, target):
            await asyncio.sleep(0)
            done.append(n)

    await asyncio.wait_for(
        asyncio.gather(
            *(transfer("a", "b", i) if i % 2 else transfer("b", "a", i) for i in range(20))
        ),
        2,
    )
    assert sorted(done) == list(range(20))
    assert len(locks) == 0


async def test_a_holder_cancelled_while_waiting_leaves_nothing_behind() -> None:
    locks = StreamLocks()
    async with locks.hold("a"):
        waiter = asyncio.create_task(locks.hold("b", "a").__aenter__())
        await asyncio.sleep(0.01)  # holds "b", waits for "a"
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert len(locks) == 1  # only the lock held here
    assert len(locks) == 0
    async with locks.hold("b"):  # "b" was given back
        pass


async def test_an_error_inside_releases_the_locks() -> None:
    locks = StreamLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("a", "b"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    async with locks.hold("a", "b"):
        assert len(locks) == 2
