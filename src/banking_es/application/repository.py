"""Account states loaded from the cache or the store, and the snapshots written with them.

A state is folded (`Account.fold`) from a snapshot or a cached copy plus the events after
it. Stream notices of other processes bring cached copies forward, or mark them behind so
the next command reads forward first instead of conflicting at append.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from banking_es.application.errors import ServiceUnavailable
from banking_es.application.ports import AggregateCache, ShardFences
from banking_es.domain.account import Account
from banking_es.eventstore.base import (
    AppendedElsewhere,
    AppendRequest,
    EventStore,
    FencedOut,
    RecordedEvent,
    Snapshot,
)
from banking_es.eventstore.codec import history

#: Streams remembered as appended by other processes (see `note_appended_elsewhere`).
MAX_BEHIND = 100_000


class AccountRepository:
    """Loads accounts (cache first, then snapshot and events), decides their snapshots, and
    appends: every command's events go through `append` (the one write path)."""

    def __init__(
        self,
        store: EventStore,
        cache: AggregateCache,
        *,
        snapshot_threshold: int,
        fences: ShardFences | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self._fences = fences
        self._snapshot_threshold = snapshot_threshold
        #: Versions other processes reached (stream notices): a cached copy below is behind.
        self._behind: dict[str, int] = {}

    async def load(self, account_id: str, fresh: bool) -> tuple[Account, bool]:
        """The account from the cache (as is, unless `fresh`) or the store, fast-forwarded;
        and whether it was read from the store just now."""
        cached = await self.cache.get(account_id)
        if cached is not None and not fresh:
            behind = self._behind.get(account_id)
            if behind is None or behind <= cached.version:
                return cached, False
        if cached is None:
            snapshot = await self.store.latest_snapshot(account_id)
            if snapshot is not None and isinstance(snapshot.state, dict):
                cached = Account.from_snapshot(snapshot.state)
            else:
                cached = Account(account_id)
        events = await self.store.read_stream(account_id, after_version=cached.version)
        if events:  # usually none: a cached copy is rarely behind
            cached.fold(history(events))
        if self._behind.get(account_id, 0) <= cached.version:
            self._behind.pop(account_id, None)
        if cached.exists:
            self.cache.put(cached)
        return cached, True

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Append `request`; with shards, fenced by the lease of its first stream's shard
        (a transfer's source), so the store refuses it once another instance took the shard."""
        fences = self._fences
        if fences is None:
            return await self.store.append(request)
        first = request.streams[0]
        fence = fences.fence_for(first.stream_id)
        if fence is None and first.expected_version > 0:
            # Another instance's shard (it moved since the request was routed): no write here.
            raise ServiceUnavailable("this account's shard moved to another instance; retry")
        try:
            recorded = await self.store.append(
                AppendRequest(request.streams, request.idempotency, request.messages, fence)
            )
        except FencedOut as exc:
            fences.fenced_out(exc.shard, exc.epoch)
            raise
        if fence is not None:  # a chunk's commands: about one event each on its first stream
            fences.executed(fence.shard, len(first.events))
        return recorded

    async def at_version(self, account_id: str, version: int) -> Account:
        """The state up to `version` (fewer events if the stream is shorter)."""
        snapshot = await self.store.latest_snapshot(account_id, max_version=version)
        account = (
            Account.from_snapshot(snapshot.state)
            if snapshot and isinstance(snapshot.state, dict)
            else Account(account_id)
        )
        events = await self.store.read_stream(
            account_id, after_version=account.version, to_version=version
        )
        return account.fold(history(events))

    async def as_of(self, account_id: str, moment: datetime) -> Account:
        """The state folded from the events recorded until `moment`."""
        events = await self.store.read_stream(account_id, recorded_until=moment)
        return Account(account_id).fold(history(events))

    def note_appended_elsewhere(self, appended: Sequence[AppendedElsewhere]) -> None:
        """Other processes appended to these streams. A cached copy just before the new
        events is brought forward with them (no query); any other copy below the new version
        is marked behind, and read forward before its next command instead of conflicting at
        append. Both only save work: the append's version check is what keeps writes safe."""
        if len(self._behind) > MAX_BEHIND:
            self._behind.clear()  # only an optimization: forgetting costs a read or a conflict
        for stream in appended:
            brought = bool(stream.events) and self._bring_forward(stream)
            if not brought and stream.version > self._behind.get(stream.stream_id, 0):
                self._behind[stream.stream_id] = stream.version

    def _bring_forward(self, stream: AppendedElsewhere) -> bool:
        cached = self.cache.peek(stream.stream_id)
        if cached is None:
            return False
        if cached.version >= stream.version:
            return True  # already there (read forward meanwhile)
        if cached.version + 1 != stream.events[0].version:
            return False  # a gap: notices missed or still on the way
        cached.fold(history(stream.events))
        self.cache.put(cached, share=False)  # the writer shared it already
        if self._behind.get(stream.stream_id, 0) <= cached.version:
            self._behind.pop(stream.stream_id, None)
        return True

    def snapshot(self, base: Account, final_version: int) -> Snapshot | None:
        """Every `snapshot_threshold` events, a snapshot: when an append takes a stream past a
        multiple of the threshold, of the state it was decided on. That state is already
        recorded (its times are the store's), so the snapshot is known before the append and
        travels with it. Loading still reads fewer than a threshold plus one chunk of events."""
        threshold = self._snapshot_threshold
        if not base.exists or final_version // threshold == base.version // threshold:
            return None
        return Snapshot(base.id, base.version, base.to_snapshot())
