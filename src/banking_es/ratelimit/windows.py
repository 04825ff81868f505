"""Moving windows kept by this server, for when Redis is not there (or is away).

- `MemoryWindows`: exact windows in this process (a server of one process), the last
  `amount` admissions of at most `max_keys` keys, least recently seen forgotten first.
- `SharedWindows`: windows in a file that `serve` creates before it starts its workers
  (named in `SHARED_FILE_ENV`), mapped into each of them: WORKERS processes keep one limit,
  not WORKERS. A window there counts in 60 buckets, plus the one being filled, under a file
  lock (one per request: `hit_all`); it never admits more than `amount` in any `window`
  seconds (it may refuse up to a sixtieth of a window longer). A fixed table of 8-way sets
  bounds the keys it tracks.
A refusal records nothing and tells when the window admits again.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import math
import mmap
import os
import struct
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cachetools import LRUCache

#: Set by `banking-es serve` for its workers: the file of their shared windows.
SHARED_FILE_ENV = "BANKING_ES_RATE_LIMIT_FILE"


#: A window to take one request from: its key, its amount and its length in seconds.
Hit = tuple[str, int, float]


class Windows(Protocol):
    def hit(self, key: str, amount: int, window: float, now: float) -> float | None:
        """None when admitted (and recorded); else when the window admits again."""

    def hit_all(self, hits: Sequence[Hit], now: float) -> tuple[int, float] | None:
        """`hit` each in turn up to the first full window: None when all admitted, else its
        index and when it admits again (the windows before it keep their hit)."""

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

    def hit_all(self, hits: Sequence[Hit], now: float) -> tuple[int, float] | None:
        for index, (key, amount, window) in enumerate(hits):
            again = self.hit(key, amount, window, now)
            if again is not None:
                return index, again
        return None


_BUCKETS = 61
_HEADER = struct.Struct("<QdqI")  # key hash (0: free), last seen, newest bucket, total
_KEY = struct.Struct("<Q")  # the header's first field
_COUNT = struct.Struct("<I")
_COUNTS = struct.Struct(f"<{_BUCKETS}I")  # each bucket's count, after the header
_SLOT = _HEADER.size + _COUNTS.size
_WAYS = 8
_EMPTY = bytes(_COUNTS.size)


@functools.lru_cache(maxsize=4096)
def _code(key: str) -> int:
    """A key's hash, the same in every process (0 marks a free slot)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1


class SharedWindows:
    """Bucketed moving windows in a file mapped by every worker of one server."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        self._sets = len(self._map) // (_SLOT * _WAYS)
        self._slots: dict[int, int] = {}  # key hash -> its slot's offset, as last seen

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
        found = self.hit_all(((key, amount, window),), now)
        return None if found is None else found[1]

    def hit_all(self, hits: Sequence[Hit], now: float) -> tuple[int, float] | None:
        """Under one lock of the file: a request's windows cost one lock, not one each."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            for index, (key, amount, window) in enumerate(hits):
                again = self._hit(key, amount, window, now)
                if again is not None:
                    return index, again
            return None
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _hit(self, key: str, amount: int, window: float, now: float) -> float | None:
        """`hit`, with the file locked."""
        code = _code(key)
        width = window / (_BUCKETS - 1)
        bucket = math.floor(now / width)
        again: float | None = None
        offset, found = self._slot(code)
        _, _, newest, total = _HEADER.unpack_from(self._map, offset)
        counts = offset + _HEADER.size
        if not found or bucket - newest >= _BUCKETS:  # nothing it holds counts any more
            self._map[counts : counts + _COUNTS.size] = _EMPTY
            newest, total = bucket, 0
        for gone in range(newest + 1, bucket + 1):  # left the window since the last hit
            at = counts + 4 * (gone % _BUCKETS)
            total -= _COUNT.unpack_from(self._map, at)[0]
            _COUNT.pack_into(self._map, at, 0)
        newest = max(newest, bucket)  # a clock stepping back counts into the newest
        if total < amount:
            at = counts + 4 * (newest % _BUCKETS)
            _COUNT.pack_into(self._map, at, _COUNT.unpack_from(self._map, at)[0] + 1)
            total += 1
        else:  # admits again when its oldest bucket leaves the window
            held = _COUNTS.unpack_from(self._map, counts)
            oldest = next(b for b in range(newest - _BUCKETS + 1, newest + 1) if held[b % _BUCKETS])
            again = (oldest + _BUCKETS) * width
        _HEADER.pack_into(self._map, offset, code, now, newest, total)
        return again

    def _slot(self, code: int) -> tuple[int, bool]:
        """The slot of `code` (True), or the one it takes: a free or the stalest (False)."""
        known = self._slots.get(code)  # where this worker last saw it, if still there
        if known is not None and _KEY.unpack_from(self._map, known)[0] == code:
            return known, True
        if len(self._slots) >= self._sets * _WAYS:
            self._slots.clear()
        offset, found = self._find(code)
        self._slots[code] = offset
        return offset, found

    def _find(self, code: int) -> tuple[int, bool]:
        first = (code % self._sets) * _WAYS * _SLOT
        victim, stalest = first, math.inf
        for offset in range(first, first + _WAYS * _SLOT, _SLOT):
            held, seen, _, _ = _HEADER.unpack_from(self._map, offset)
            if held == code:
                return offset, True
            if seen < stalest:
                victim, stalest = offset, seen
        return victim, False


def local_windows(max_keys: int) -> Windows:
    """The shared file's windows in a worker of `serve`; else this process's own."""
    path = os.environ.get(SHARED_FILE_ENV)
    return SharedWindows(Path(path)) if path else MemoryWindows(max_keys)
