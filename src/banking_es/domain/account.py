"""The Account aggregate: check, then emit, then apply.

Command methods check the rules and return the new events without changing state;
`apply` is the only mutation, and replaying events never re-checks a rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from banking_es.domain import errors
from banking_es.domain.events import (
    AccountClosed,
    AccountCreated,
    DomainEvent,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferSent,
)
from banking_es.domain.money import (
    LIMIT,
    ZERO,
    format_money,
    is_currency,
    minor_units,
    positive_money,
    to_money,
)

OPEN = "open"
CLOSED = "closed"
MAX_OWNER_NAME = 200
MAX_DESCRIPTION = 500


@dataclass(slots=True)
class Account:
    """The state of one account, folded from its events. `version` = events applied."""

    id: str
    owner_name: str = ""
    owner_id: str | None = None
    balance: Decimal = ZERO
    currency: str = "USD"
    status: str = OPEN
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_reason: str | None = field(default=None)

    # ---- commands: check and emit -------------------------------------------------

    @staticmethod
    def open(
        account_id: str,
        owner_name: str,
        initial_balance: Decimal,
        currency: str,
        owner_id: str | None = None,
    ) -> AccountCreated:
        name = owner_name.strip()
        if not name:
            raise errors.InvalidAccountData("owner_name is required")
        if len(name) > MAX_OWNER_NAME:
            raise errors.InvalidAccountData(f"owner_name must be at most {MAX_OWNER_NAME} chars")
        if not is_currency(currency):
            raise errors.InvalidAccountData(
                "currency must be an active ISO 4217 currency code such as USD"
            )
        balance = to_money(initial_balance, minor_units(currency), "initial_balance")
        if balance < ZERO:
            raise errors.InvalidAmount("initial_balance must be non-negative", "initial_balance")
        return AccountCreated(account_id, name, balance, currency, owner_id)

    def deposit(self, amount: Decimal, description: str | None = None) -> MoneyDeposited:
        places = minor_units(self.currency)
        amount = positive_money(amount, places)
        _check_text("description", description)
        self._require_open()
        self._require_within_limit(amount)
        return MoneyDeposited(amount, description, places)

    def withdraw(self, amount: Decimal, description: str | None = None) -> MoneyWithdrawn:
        places = minor_units(self.currency)
        amount = positive_money(amount, places)
        _check_text("description", description)
        self._require_open()
        self._require_funds(amount)
        return MoneyWithdrawn(amount, description, places)

    def close(self, reason: str) -> AccountClosed:
        _check_text("reason", reason)
        self._require_open()
        if self.balance != ZERO:
            raise errors.BalanceNotZero(self.id, self.balance)
        return AccountClosed(reason)

    def send_transfer(
        self, transfer_id: str, target: Account, amount: Decimal, description: str | None = None
    ) -> tuple[TransferSent, TransferReceived]:
        """Check both sides of a transfer and return the pair of events."""
        places = minor_units(self.currency)
        amount = positive_money(amount, places)
        _check_text("description", description)
        if target.id == self.id:
            raise errors.SameAccount("cannot transfer to the same account")
        self._require_open()
        target._require_open()
        if target.currency != self.currency:
            raise errors.CurrencyMismatch(
                f"cannot transfer {self.currency} to an account kept in {target.currency}"
            )
        self._require_funds(amount)
        target._require_within_limit(amount)
        return (
            TransferSent(transfer_id, target.id, amount, description, places),
            TransferReceived(transfer_id, self.id, amount, description, places),
        )

    # ---- apply: the only mutation --------------------------------------------------

    def apply(self, event: DomainEvent, at: datetime | None = None) -> None:
        """Fold one event into the state. Never checks a rule."""
        match event:
            case AccountCreated():
                self.owner_name = event.owner_name
                self.owner_id = event.owner_id
                self.balance = event.initial_balance
                self.currency = event.currency
                self.status = OPEN
                self.created_at = at
            case MoneyDeposited() | TransferReceived():
                self.balance += event.amount
            case MoneyWithdrawn() | TransferSent():
                self.balance -= event.amount
            case AccountClosed():
                self.status = CLOSED
                self.closed_reason = event.reason
            case _:
                raise ValueError(f"Account cannot apply {type(event).__name__}")
        self.version += 1
        self.updated_at = at

    def fold(self, events: Iterable[tuple[DomainEvent, datetime | None]]) -> Account:
        """Apply `events` (each with the time it was recorded) in order; returns self.
        The one place events are folded: from nothing, a snapshot or a cached state."""
        apply = self.apply
        for event, at in events:
            apply(event, at)
        return self

    @classmethod
    def replay(
        cls, account_id: str, events: Iterable[tuple[DomainEvent, datetime | None]]
    ) -> Account:
        return cls(account_id).fold(events)

    def copy(self) -> Account:
        # Every field, positionally: far cheaper than `dataclasses.replace`, and the hot paths
        # copy an account several times per command. tests/unit/test_account.py checks every field.
        return Account(
            self.id,
            self.owner_name,
            self.owner_id,
            self.balance,
            self.currency,
            self.status,
            self.version,
            self.created_at,
            self.updated_at,
            self.closed_reason,
        )

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    # ---- snapshot form ----------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner_name": self.owner_name,
            "owner_id": self.owner_id,
            "balance": format_money(self.balance, minor_units(self.currency)),
            "currency": self.currency,
            "status": self.status,
            "version": self.version,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "closed_reason": self.closed_reason,
        }

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> Account:
        return cls(
            id=state["id"],
            owner_name=state["owner_name"],
            owner_id=state.get("owner_id"),
            balance=Decimal(state["balance"]),
            currency=state["currency"],
            status=state["status"],
            version=int(state["version"]),
            created_at=_parse_time(state.get("created_at")),
            updated_at=_parse_time(state.get("updated_at")),
            closed_reason=state.get("closed_reason"),
        )

    # ---- guards -------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self.status != OPEN:
            raise errors.AccountClosed(self.id)

    def _require_funds(self, amount: Decimal) -> None:
        if self.balance - amount < lowest_allowed_balance(self):
            raise errors.InsufficientFunds(self.id, self.balance, amount)

    def _require_within_limit(self, amount: Decimal) -> None:
        if self.balance + amount >= LIMIT:
            places = minor_units(self.currency)
            raise errors.BalanceLimitExceeded(
                "the balance would exceed 15 integer digits "
                f"({format_money(self.balance, places)} + {format_money(amount, places)})"
            )


def lowest_allowed_balance(account: Account) -> Decimal:
    """The lowest balance the rules allow `account` to reach: the one rule of funds, used
    by the withdrawal and transfer guards and by `banking-es verify` on every recorded
    event. Holds or an overdraft limit would change it here, and in its SQL form
    (`LOWEST_ALLOWED`, verify/sql.py), which a test holds to this function."""
    return ZERO


def _check_text(name: str, value: str | None) -> None:
    if value is not None and len(value) > MAX_DESCRIPTION:
        raise errors.InvalidAccountData(f"{name} must be at most {MAX_DESCRIPTION} characters")


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
