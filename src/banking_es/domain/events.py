"""Domain events: small frozen dataclasses in the past tense.

Each event knows its wire `data` (API.md, "Events"): amounts are 2-decimal strings.
Types may be added, never renamed; `EVENT_TYPES` maps the stored type name to its class.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from banking_es.domain.money import format_money

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
            "initial_balance": format_money(self.initial_balance),
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

    def to_data(self) -> dict[str, Any]:
        return {"amount": format_money(self.amount), "description": self.description}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> MoneyDeposited:
        return cls(amount=Decimal(data["amount"]), description=data.get("description"))


@dataclass(frozen=True, slots=True)
class MoneyWithdrawn(DomainEvent):
    type: ClassVar[str] = "MoneyWithdrawn"
    amount: Decimal
    description: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"amount": format_money(self.amount), "description": self.description}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> MoneyWithdrawn:
        return cls(amount=Decimal(data["amount"]), description=data.get("description"))


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

    def to_data(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "to_account_id": self.to_account_id,
            "amount": format_money(self.amount),
            "description": self.description,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TransferSent:
        return cls(
            transfer_id=data["transfer_id"],
            to_account_id=data["to_account_id"],
            amount=Decimal(data["amount"]),
            description=data.get("description"),
        )


@dataclass(frozen=True, slots=True)
class TransferReceived(DomainEvent):
    type: ClassVar[str] = "TransferReceived"
    transfer_id: str
    from_account_id: str
    amount: Decimal
    description: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "from_account_id": self.from_account_id,
            "amount": format_money(self.amount),
            "description": self.description,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TransferReceived:
        return cls(
            transfer_id=data["transfer_id"],
            from_account_id=data["from_account_id"],
            amount=Decimal(data["amount"]),
            description=data.get("description"),
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


def event_from_stored(type_name: str, data: dict[str, Any]) -> DomainEvent:
    """Rebuild a domain event from its stored type and (already upcast) data."""
    try:
        cls = EVENT_TYPES[type_name]
    except KeyError:
        raise ValueError(f"unknown event type {type_name!r}") from None
    return cls.from_data(data)
