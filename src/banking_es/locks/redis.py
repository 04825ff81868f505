"""Locks on Redis: redis-py's asyncio `Lock` (SET NX PX to take, Lua scripts to extend and
to release only while the token is ours). One `Lock` object per acquisition, its token not
thread-local: a thread-local token is shared by every task of the event loop's thread."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError as RedisLockError


class RedisLocks:
    """The Redis `Backend`: keys `<prefix>:lock:<name>`."""

    def __init__(self, client: Redis, prefix: str = "banking-es") -> None:
        self.client = client
        self.prefix = prefix

    async def open(self, name: str, ttl: float) -> Lock:
        return Lock(
            self.client,
            f"{self.prefix}:lock:{name}",
            timeout=ttl,
            blocking=False,
            thread_local=False,
        )

    async def try_acquire(self, handle: Lock) -> bool:
        return bool(await handle.acquire(blocking=False))

    async def extend(self, handle: Lock) -> bool:
        try:
            await handle.reacquire()  # the expiry back to a whole ttl, if the token is ours
        except RedisLockError:  # LockNotOwnedError, or no token: not ours
            return False
        return True

    async def release(self, handle: Lock) -> bool:
        try:
            await handle.release()
        except RedisLockError:
            return False
        return True

    async def discard(self, handle: Lock) -> None:
        return None

    async def close(self) -> None:
        await self.client.aclose()
