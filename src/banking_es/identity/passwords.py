"""Argon2id password hashing (argon2-cffi), off the event loop.

The cost comes from settings (tests lower it). Verifying against a hash made with other
parameters succeeds and reports `needs_rehash`, so stored hashes follow the settings.
Unknown users are checked against a dummy hash of the same cost, so they take as long.
At most `slots` hashes run at once in a process (the CPU count, at least 2). New users'
hashes hold at most half of them, in threads of their own at a lower CPU priority (Linux):
a flood of registrations cannot starve logins of slots, nor of CPU on a busy host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    """Hash and verify passwords with Argon2id."""

    def __init__(
        self, time_cost: int, memory_cost: int, parallelism: int = 1, *, slots: int | None = None
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self._dummy: str | None = None
        self.slots = max(2, slots or os.cpu_count() or 1)
        self._slots = asyncio.Semaphore(self.slots)
        self._registrations = asyncio.Semaphore(self.slots // 2)
        self._registering = ThreadPoolExecutor(
            self.slots // 2, "argon2-registration", initializer=_lower_priority
        )

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def hash_new_user(self, password: str) -> str:
        """`hash` for a registration: waits while half of the slots hash for new users."""
        async with self._registrations, self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._registering, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches; with no hash (unknown user) spend the same time."""
        if stored_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            await self._verify(self._dummy, password)
            return False
        return await self._verify(stored_hash, password)

    async def _verify(self, stored_hash: str, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._check, stored_hash, password)

    def _check(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


def _lower_priority() -> None:
    """Nice this thread (Linux counts niceness per thread), so that it yields to logins."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
