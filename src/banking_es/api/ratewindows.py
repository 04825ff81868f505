"""Moving windows kept by this server, for when Redis is not there (or is away).

- `MemoryWindows`: exact windows in this process (a server of one process), the last
  `amount` admissions of at most `max_keys` keys, least recently seen forgotten first.
- `SharedWindows`: windows in a file that `serve` creates before it starts its workers
  (named in `SHARED_FILE_ENV`), mapped into each of them: WORKERS processes keep one limit,
  not WORKERS. A window there counts in 60 buckets, plus the one being filled, under a file
  lock; it never admits more than `amount` in any `window` seconds (it may refuse up to a
  sixtieth of a window longer). A fixed table of 8-way sets bounds the keys it tracks.
A refusal records nothing and tells when the window admits again.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
from collections import deque
from pathlib import Path
from typing import Protocol

from cachetools import LRUCache

#: Set by `banking-es serve` for its workers: the file of their shared windows.
SHARED_FILE_ENV = "BANKING_ES_RATE_LIMIT_FILE"


class Windows(Protocol):
    def hit(self, key: str, amount: int, window: float, now: float) -> float | None:
        """None when admitted (and recorded); else when the window admits again."""

    @property
    def tracked_keys(self) -> int: ...


class MemoryWindows:
    """The last `amount` admissions of each key, in this process."""

    def __init__(self, max_keys: int) -> None:
        self._hits: LRUCache[str, deque[float]] = LRUCache(maxsize=max_keys)

    @property
    def tracked_keys(self) -> int:
        return len(self._hits)

    def hit(self, key: str, amount: int, window: float, now: float) -> float | None:
        stamps = self._hits.get(key)
        if stamps is None:
            stamps = self._hits[key] = deque(maxlen=amount)
        # An admission exactly `window` seconds old still counts (as in `limits`).
        if len(stamps) >= amount and stamps[0] >= now - window:
            return stamps[0] + window
        stamps.append(now)
        return None


_HEADER = struct.Struct("<Qdq")  # key hash (0: free), last seen, newest bucket
_BUCKETS = 61
_COUNTS = _HEADER.size
_SLOT = _COUNTS + 4 * _BUCKETS + 4
_WAYS = 8


class SharedWindows:
    """Bucketed moving windows in a file mapped by every worker of one server."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        self._sets = len(self._map) // (_SLOT * _WAYS)

    @staticmethod
    def create(path: Path, max_keys: int) -> None:
        """An empty table for `max_keys` keys (the workers map it; it is never read back)."""
        sets = max(1, math.ceil(max_keys / _WAYS))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, sets * _WAYS * _SLOT)
        finally:
            os.close(fd)

    @property
    def tracked_keys(self) -> int:
        return sum(
            1 for i in range(self._sets * _WAYS) if _HEADER.unpack_from(self._map, i * _SLOT)[0]
        )

    def hit(self, key: str, amount: int, window: float, now: float) -> float | None:
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        code = int.from_bytes(digest, "little") or 1
        width = window / (_BUCKETS - 1)
        bucket = math.floor(now / width)
        again: float | None = None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            offset, found = self._slot(code)
            newest = _HEADER.unpack_from(self._map, offset)[2] if found else bucket - _BUCKETS
            counted = offset + _COUNTS
            with (
                memoryview(self._map)[counted : counted + 4 * _BUCKETS] as raw,
                raw.cast("I") as counts,
            ):
                for gone in range(max(newest + 1, bucket - _BUCKETS + 1), bucket + 1):
                    counts[gone % _BUCKETS] = 0  # left the window since the last hit
                newest = max(newest, bucket)  # a clock stepping back counts into the newest
                if sum(counts) < amount:
                    counts[newest % _BUCKETS] += 1
                else:
                    oldest = next(
                        b for b in range(newest - _BUCKETS + 1, newest + 1) if counts[b % _BUCKETS]
                    )
                    again = (oldest + _BUCKETS) * width
            _HEADER.pack_into(self._map, offset, code, now, newest)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return again

    def _slot(self, code: int) -> tuple[int, bool]:
        """The slot of `code` (True), or the one it takes: a free or the stalest (False)."""
        first = (code % self._sets) * _WAYS * _SLOT
        victim, stalest = first, math.inf
        for offset in range(first, first + _WAYS * _SLOT, _SLOT):
            held, seen, _ = _HEADER.unpack_from(self._map, offset)
            if held == code:
                return offset, True
            if seen < stalest:
                victim, stalest = offset, seen
        return victim, False


def local_windows(max_keys: int) -> Windows:
    """The shared file's windows in a worker of `serve`; else this process's own."""
    path = os.environ.get(SHARED_FILE_ENV)
    return SharedWindows(Path(path)) if path else MemoryWindows(max_keys)
