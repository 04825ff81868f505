"""Who may see and move which account: the one place ownership is decided.

- customer: their own accounts only; anybody else's is "not found" (nothing disclosed);
- auditor: reads everything, writes nothing (Forbidden);
- admin: everything.
A transfer's source must be the caller's own account; its target may be any open one.
A hold is seen by both accounts' owners; its destination's owner may capture but not void it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from banking_es.application.errors import NotFound
from banking_es.domain.account import Account
from banking_es.identity.errors import Forbidden
from banking_es.identity.service import Principal


class AccountOwners(Protocol):
    """The one question access asks of the accounts (`AccountService` answers it)."""

    def owner_of(self, account_id: str) -> Awaitable[str | None]: ...


class Transfer(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def from_account_id(self) -> str: ...
    @property
    def to_account_id(self) -> str: ...


class Hold(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def to_account_id(self) -> str | None: ...


class AccountAccess:
    """Authorization checks for account and transfer requests."""

    def __init__(self, accounts: AccountOwners) -> None:
        self._accounts = accounts

    def list_owner(self, principal: Principal) -> str | None:
        """Whose accounts a listing shows: None means everybody's."""
        return None if principal.reads_all else principal.user_id

    def check_create(self, principal: Principal) -> None:
        if not principal.may_write:
            raise Forbidden("this role may read but not write")

    async def check_read(self, principal: Principal, account_id: str) -> None:
        if not principal.reads_all:
            await self._require_owner(principal, account_id)

    def check_read_of(self, principal: Principal, account: Account) -> None:
        """`check_read` of an account already loaded (the same answer, without a lookup)."""
        if not principal.reads_all and account.owner_id != principal.user_id:
            raise NotFound(f"account {account.id} not found")

    async def check_write(self, principal: Principal, account_id: str) -> None:
        self.check_create(principal)
        if not principal.is_admin:
            await self._require_owner(principal, account_id)

    async def check_transfer_visible(self, principal: Principal, transfer: Transfer) -> None:
        if principal.reads_all:
            return
        for account_id in (transfer.from_account_id, transfer.to_account_id):
            if await self._accounts.owner_of(account_id) == principal.user_id:
                return
        raise NotFound(f"transfer {transfer.id} not found")

    async def check_hold_visible(self, principal: Principal, hold: Hold) -> None:
        """Owners of either account see a hold; auditors and admins see every hold."""
        if not principal.reads_all and await self._hold_party(principal, hold) is None:
            raise NotFound(f"hold {hold.id} not found")

    async def check_hold_settle(self, principal: Principal, hold: Hold, *, void: bool) -> None:
        """The source's owner captures and voids; the destination's owner (who sees the hold)
        may capture it but not void it (403); anybody else's hold is "not found"."""
        self.check_create(principal)
        if principal.is_admin:
            return
        party = await self._hold_party(principal, hold)
        if party is None:
            raise NotFound(f"hold {hold.id} not found")
        if void and party == "destination":
            raise Forbidden("only the source account's owner may void a hold")

    async def _hold_party(self, principal: Principal, hold: Hold) -> str | None:
        if await self._accounts.owner_of(hold.account_id) == principal.user_id:
            return "source"
        target = hold.to_account_id
        if target is not None and await self._accounts.owner_of(target) == principal.user_id:
            return "destination"
        return None

    async def _require_owner(self, principal: Principal, account_id: str) -> None:
        if await self._accounts.owner_of(account_id) != principal.user_id:
            raise NotFound(f"account {account_id} not found")
