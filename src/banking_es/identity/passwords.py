"""Argon2id password hashing (argon2-cffi), off the event loop.

The cost comes from settings (tests lower it). Verifying against a hash made with other
parameters succeeds and reports `needs_rehash`, so stored hashes follow the settings.
Unknown users are checked against a dummy hash of the same cost, so they take as long.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    """Hash and verify passwords with Argon2id."""

    def __init__(self, time_cost: int, memory_cost: int, parallelism: int = 1) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches; with no hash (unknown user) spend the same time."""
        if stored_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_urlsafe(16))
            stored_hash = self._dummy
            await asyncio.to_thread(self._check, stored_hash, password)
            return False
        return await asyncio.to_thread(self._check, stored_hash, password)

    def _check(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)
