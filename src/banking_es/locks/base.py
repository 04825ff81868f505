"""The lock manager: the port, its errors, and what every backend shares (retries with
jitter, extension while held, metrics). A backend only says how to take, extend and give
back one lock (`Backend`).

    LockError
    ├── LockTimeout      not acquired within the time allowed
    ├── LockLost         expired or taken over while held: it is no longer ours
    └── LockUnavailable  the lock's store failed or cannot be reached

Lock names label the metrics: keep them few and fixed ("rebalancer", "relay").
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, Protocol, TypeVar

from banking_es.observability.locks import LockMetrics

H = TypeVar("H")

#: Bounds of the pause between two attempts; each pause is drawn between them (full
#: jitter), so contenders that lost together do not come back together.
RETRY_MIN_S = 0.01
RETRY_MAX_S = 0.2


class LockError(Exception):
    """Base of the lock manager's errors."""


class LockTimeout(LockError):
    """The lock was held by another for the whole time allowed."""


class LockLost(LockError):
    """The lock expired or was taken by another while this holder believed it held it."""


class LockUnavailable(LockError):
    """The store of the locks (Redis, PostgreSQL, SQLite) failed; nothing is held."""


class Backend(Protocol[H]):
    """How one kind of store takes, extends and gives back a lock. `H` is what one
    acquisition keeps (a Redis `Lock`, a PostgreSQL connection, a token)."""

    async def open(self, name: str, ttl: float) -> H:
        """Prepare one acquisition of `name` (nothing is taken yet)."""
        ...

    async def try_acquire(self, handle: H) -> bool:
        """One attempt; False when another holds the lock."""
        ...

    async def extend(self, handle: H) -> bool:
        """Push the expiry `ttl` ahead; False when the lock is no longer this handle's."""
        ...

    async def release(self, handle: H) -> bool:
        """Give the lock back; False when it was no longer this handle's (nothing done)."""
        ...

    async def discard(self, handle: H) -> None:
        """Free what `open` took (after a release, or when never acquired)."""
        ...

    async def close(self) -> None: ...


class HeldLock(Generic[H]):
    """One acquisition, extended in the background every third of its `ttl` until released.

    `lost` is set when an extension finds the lock gone (or could not reach the store for a
    whole `ttl`): the holder must stop acting as the only one.
    """

    def __init__(
        self, manager: LockManager[H], name: str, handle: H, ttl: float, auto_extend: bool
    ) -> None:
        self.name = name
        self.ttl = ttl
        self.lost = asyncio.Event()
        self._manager = manager
        self._handle = handle
        loop = asyncio.get_running_loop()
        self._acquired_at = loop.time()
        self._extended_at = self._acquired_at
        self._released = False
        self._extender = asyncio.create_task(self._extend_loop()) if auto_extend else None

    async def extend(self) -> None:
        """Push the expiry ahead now; raise `LockLost` if the lock is no longer ours."""
        if self.lost.is_set() or not await self._manager.backend.extend(self._handle):
            self._mark_lost()
            raise LockLost(f"lock {self.name!r} was lost")
        self._extended_at = asyncio.get_running_loop().time()

    async def release(self) -> None:
        """Give the lock back; raise `LockLost` if it had expired or been taken meanwhile
        (the release then touched nothing: another holder's lock stays theirs)."""
        if self._released:
            return
        self._released = True
        if self._extender is not None:
            self._extender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._extender
        backend = self._manager.backend
        try:
            owned = not self.lost.is_set() and await backend.release(self._handle)
        finally:
            await backend.discard(self._handle)
            held = asyncio.get_running_loop().time() - self._acquired_at
            self._manager.metrics.hold.labels(self.name).observe(held)
        if not owned:
            self._mark_lost()
            raise LockLost(f"lock {self.name!r} was lost before its release")

    def _mark_lost(self) -> None:
        if not self.lost.is_set():
            self.lost.set()
            self._manager.metrics.lost.labels(self.name).inc()

    async def _extend_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.lost.is_set():
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.extend()
            except LockLost:
                return
            except Exception:  # the store is away: the lock lapses after its ttl
                if loop.time() - self._extended_at >= self.ttl:
                    self._mark_lost()
                    return


class LockManager(Generic[H]):
    """Named locks over one `Backend`; one `HeldLock` per acquisition."""

    def __init__(self, backend: Backend[H], metrics: LockMetrics | None = None) -> None:
        self.backend = backend
        self.metrics = metrics if metrics is not None else LockMetrics()

    async def acquire(
        self, name: str, *, ttl: float, timeout: float = 0.0, auto_extend: bool = True
    ) -> HeldLock[H]:
        """Take `name` for `ttl` seconds (extended while held unless `auto_extend` is off),
        retrying for up to `timeout` seconds; raise `LockTimeout` if it stays taken."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        handle: H | None = None
        contended = False
        try:
            handle = await self.backend.open(name, ttl)
            while not await self.backend.try_acquire(handle):
                if not contended:
                    contended = True
                    self.metrics.contended.labels(name).inc()
                left = deadline - loop.time()
                if left <= 0:
                    self.metrics.acquisitions.labels(name, "timeout").inc()
                    raise LockTimeout(f"lock {name!r} is held by another")
                await asyncio.sleep(min(left, random.uniform(RETRY_MIN_S, RETRY_MAX_S)))
        except BaseException as exc:
            if handle is not None:
                await self.backend.discard(handle)
            if isinstance(exc, LockTimeout | asyncio.CancelledError):
                raise
            self.metrics.acquisitions.labels(name, "error").inc()
            if isinstance(exc, Exception):
                raise LockUnavailable(f"lock {name!r}: {exc}") from exc
            raise
        finally:
            self.metrics.wait.labels(name).observe(loop.time() - started)
        self.metrics.acquisitions.labels(name, "acquired").inc()
        return HeldLock(self, name, handle, ttl, auto_extend)

    @asynccontextmanager
    async def hold(
        self, name: str, *, ttl: float, timeout: float = 0.0
    ) -> AsyncIterator[HeldLock[H]]:
        """`async with locks.hold("rebalancer", ttl=10):` the lock inside the block. Leaving
        the block after the lock was lost raises `LockLost`."""
        held = await self.acquire(name, ttl=ttl, timeout=timeout)
        try:
            yield held
        except BaseException:
            with contextlib.suppress(LockLost):  # the block's own error says more
                await held.release()
            raise
        await held.release()

    async def close(self) -> None:
        await self.backend.close()
