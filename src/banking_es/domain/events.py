"""Domain events: small frozen dataclasses in the past tense.

Each event knows its wire `data` (API.md, "Events"): amounts are decimal strings with the
account currency's minor digits, which an amount event carries as `minor_units` (not in `data`).
Types may be added, never renamed; `EVENT_TYPES` maps the stored type name to its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from banking_es.domain.money import MAX_MINOR_UNITS, format_in, format_money

#: The current schema version of every event's `data`; older shapes are upcast on read.
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Base of all account events."""

    type: ClassVar[str] = "DomainEvent"

    def to_data(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DomainEvent:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class AccountCreated(DomainEvent):
    type: ClassVar[str] = "AccountCreated"
    account_id: str
    owner_name: str
    initial_balance: Decimal
    currency: str
    owner_id: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "owner_name": self.owner_name,
            "initial_balance": format_in(self.initial_balance, self.currency),
            "currency": self.currency,
            "owner_id": self.owner_id,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> AccountCreated:
        return cls(
            account_id=data["account_id"],
            owner_name=data["owner_name"],
            initial_balance=Decimal(data["initial_balance"]),
            currency=data["currency"],
            owner_id=data.get("owner_id"),
        )


@dataclass(frozen=True, slots=True)
class MoneyDeposited(DomainEvent):
    type: ClassVar[str] = "MoneyDeposited"
    amount: Decimal
    description: str | None = None
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {
            "amount": format_money(self.amount, self.minor_units),
            "description": self.description,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> MoneyDeposited:
        amount = Decimal(data["amount"])
        return cls(amount, data.get("description"), _stored_places(amount))


@dataclass(frozen=True, slots=True)
class MoneyWithdrawn(DomainEvent):
    type: ClassVar[str] = "MoneyWithdrawn"
    amount: Decimal
    description: str | None = None
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {
            "amount": format_money(self.amount, self.minor_units),
            "description": self.description,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> MoneyWithdrawn:
        amount = Decimal(data["amount"])
        return cls(amount, data.get("description"), _stored_places(amount))


@dataclass(frozen=True, slots=True)
class AccountClosed(DomainEvent):
    type: ClassVar[str] = "AccountClosed"
    reason: str

    def to_data(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> AccountClosed:
        return cls(reason=data.get("reason") or "")


@dataclass(frozen=True, slots=True)
class TransferSent(DomainEvent):
    type: ClassVar[str] = "TransferSent"
    transfer_id: str
    to_account_id: str
    amount: Decimal
    description: str | None = None
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "to_account_id": self.to_account_id,
            "amount": format_money(self.amount, self.minor_units),
            "description": self.description,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TransferSent:
        return cls(
            transfer_id=data["transfer_id"],
            to_account_id=data["to_account_id"],
            amount=(amount := Decimal(data["amount"])),
            description=data.get("description"),
            minor_units=_stored_places(amount),
        )


@dataclass(frozen=True, slots=True)
class TransferReceived(DomainEvent):
    type: ClassVar[str] = "TransferReceived"
    transfer_id: str
    from_account_id: str
    amount: Decimal
    description: str | None = None
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "from_account_id": self.from_account_id,
            "amount": format_money(self.amount, self.minor_units),
            "description": self.description,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TransferReceived:
        return cls(
            transfer_id=data["transfer_id"],
            from_account_id=data["from_account_id"],
            amount=(amount := Decimal(data["amount"])),
            description=data.get("description"),
            minor_units=_stored_places(amount),
        )


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.type: cls
    for cls in (
        AccountCreated,
        MoneyDeposited,
        MoneyWithdrawn,
        AccountClosed,
        TransferSent,
        TransferReceived,
    )
}


def _stored_places(amount: Decimal) -> int:
    """The digits an amount was recorded with ("150" has 0, "1.500" has 3): re-encoding an
    event gives back the same text."""
    exponent = amount.as_tuple().exponent
    return min(-exponent, MAX_MINOR_UNITS) if isinstance(exponent, int) and exponent < 0 else 0


def event_from_stored(type_name: str, data: dict[str, Any]) -> DomainEvent:
    """Rebuild a domain event from its stored type and (already upcast) data."""
    try:
        cls = EVENT_TYPES[type_name]
    except KeyError:
        raise ValueError(f"unknown event type {type_name!r}") from None
    return cls.from_data(data)
