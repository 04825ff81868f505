"""Reads of accounts and transfers from the cache and the event store (not the read models)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from banking_es.application.errors import NotFound
from banking_es.application.ports import EventPageCache
from banking_es.application.repository import AccountRepository
from banking_es.application.results import TransferResult
from banking_es.application.statements import Period, Statement, read_statement
from banking_es.domain.account import Account
from banking_es.domain.events import TransferSent
from banking_es.eventstore.base import RecordedEvent
from banking_es.eventstore.codec import to_domain


class AccountQueries:
    """Accounts now, at a version or a moment; their events; transfers."""

    def __init__(self, repository: AccountRepository, pages: EventPageCache | None) -> None:
        self._repository = repository
        self._store = repository.store
        self._cache = repository.cache
        self._pages = pages

    async def get_account(self, account_id: str) -> Account:
        """The current state, including every write acknowledged before the call (any process)."""
        account, _ = await self._repository.load(account_id, fresh=True)
        if not account.exists:
            raise NotFound(f"account {account_id} not found")
        return account

    async def cached_account(self, account_id: str) -> Account | None:
        """The account as cached (possibly a little behind), or loaded if not cached; None if
        it does not exist. For advisory checks such as validation warnings."""
        account, _ = await self._repository.load(account_id, fresh=False)
        return account if account.exists else None

    async def listed_accounts(self, account_ids: Sequence[str]) -> list[Account]:
        """The accounts of a list's page, in order, as cached (a list may lag a moment) or
        loaded, the missing ones together; any that does not exist is left out."""
        found = {a: account for a in account_ids if (account := self._cache.peek(a)) is not None}
        missing = [a for a in account_ids if a not in found]
        if missing:  # a task each only for these: a page of cached accounts awaits nothing
            loads = (self._repository.load(a, fresh=False) for a in missing)
            for account, _ in await asyncio.gather(*loads):
                found[account.id] = account
        return [found[a] for a in account_ids if found[a].exists]

    async def owner_of(self, account_id: str) -> str | None:
        """The owner's user id. It never changes, so a cached state answers without a query
        (looked at, not counted as a cache hit: the command that follows counts its own)."""
        cached = self._cache.peek(account_id)
        if cached is not None and cached.exists:
            return cached.owner_id
        account, _ = await self._repository.load(account_id, fresh=False)
        if not account.exists:
            raise NotFound(f"account {account_id} not found")
        return account.owner_id

    async def account_at_version(self, account_id: str, version: int) -> Account:
        account = await self._repository.at_version(account_id, version)
        if not account.exists or account.version != version:
            raise NotFound(f"account {account_id} has no version {version}")
        return account

    async def account_as_of(self, account_id: str, moment: datetime) -> Account:
        account = await self._repository.as_of(account_id, moment)
        if not account.exists:
            raise NotFound(f"account {account_id} did not exist at {moment.isoformat()}")
        return account

    async def account_events(
        self, account_id: str, after_version: int, limit: int
    ) -> list[RecordedEvent]:
        if self._pages is not None:
            cached = await self._pages.get(account_id, after_version, limit)
            if cached is not None:
                return cached
        events = await self._store.read_stream(account_id, after_version, limit=limit)
        if self._pages is not None and len(events) == limit:
            await self._pages.put(account_id, after_version, limit, events)
        if not events and not await self._store.read_stream(account_id, 0, limit=1):
            raise NotFound(f"account {account_id} not found")
        return events

    async def statement(self, account_id: str, period: Period) -> Statement:
        """The account's statement of `period`, from its events (application/statements.py)."""
        return await read_statement(self._store, account_id, period)

    async def get_transfer(self, transfer_id: str) -> TransferResult:
        event = await self._store.get_event(transfer_id)
        if event is None or event.type != TransferSent.type:
            raise NotFound(f"transfer {transfer_id} not found")
        sent = to_domain(event)
        assert isinstance(sent, TransferSent)
        source = await self.get_account(event.stream_id)
        return TransferResult(
            transfer_id,
            event.stream_id,
            sent.to_account_id,
            sent.amount,
            source.currency,
            sent.description,
            event.recorded_at,
        )
