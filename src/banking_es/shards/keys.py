"""Which shard an account belongs to: a stable hash of its id, the same in every process,
on every machine and in every release (CRC-32 of the UTF-8 id, modulo the shard count)."""

from __future__ import annotations

from zlib import crc32


def shard_of(account_id: str, shard_count: int) -> int:
    """The shard (0 .. shard_count - 1) of `account_id`."""
    return crc32(account_id.encode()) % shard_count
