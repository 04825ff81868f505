"""Domain events: small frozen dataclasses in the past tense.

Each event knows its wire `data` (API.md, "Events"): amounts are decimal strings with the
account currency's minor digits, which an amount event carries as `minor_units` (not in `data`).
Types may be added, never renamed; `EVENT_TYPES` maps the stored type name to its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

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


def _time(value: datetime) -> str:
    return value.isoformat()


@dataclass(frozen=True, slots=True)
class HoldPlaced(DomainEvent):
    """Money reserved on the source account (the stream it is in); `hold_id` is this event's
    id, as a transfer's id is its `TransferSent`'s."""

    type: ClassVar[str] = "HoldPlaced"
    hold_id: str
    amount: Decimal
    to_account_id: str | None
    expires_at: datetime
    description: str | None = None
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "amount": format_money(self.amount, self.minor_units),
            "to_account_id": self.to_account_id,
            "expires_at": _time(self.expires_at),
            "description": self.description,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> HoldPlaced:
        return cls(
            hold_id=data["hold_id"],
            amount=(amount := Decimal(data["amount"])),
            to_account_id=data.get("to_account_id"),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            description=data.get("description"),
            minor_units=_stored_places(amount),
        )


@dataclass(frozen=True, slots=True)
class HoldCaptured(DomainEvent):
    """`amount` of the hold leaves the account (to its destination, if it has one, whose
    stream gets a `TransferReceived` with the hold id in the same append); `released` is
    the rest of the hold, given back."""

    type: ClassVar[str] = "HoldCaptured"
    hold_id: str
    amount: Decimal
    released: Decimal
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "amount": format_money(self.amount, self.minor_units),
            "released": format_money(self.released, self.minor_units),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> HoldCaptured:
        return cls(
            hold_id=data["hold_id"],
            amount=(amount := Decimal(data["amount"])),
            released=Decimal(data["released"]),
            minor_units=_stored_places(amount),
        )


@dataclass(frozen=True, slots=True)
class _HoldReleased(DomainEvent):
    """A pending hold's whole amount released without moving money (voided or expired)."""

    hold_id: str
    amount: Decimal
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {"hold_id": self.hold_id, "amount": format_money(self.amount, self.minor_units)}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Self:
        amount = Decimal(data["amount"])
        return cls(data["hold_id"], amount, _stored_places(amount))


@dataclass(frozen=True, slots=True)
class HoldVoided(_HoldReleased):
    type: ClassVar[str] = "HoldVoided"


@dataclass(frozen=True, slots=True)
class HoldExpired(_HoldReleased):
    type: ClassVar[str] = "HoldExpired"


@dataclass(frozen=True, slots=True)
class OverdraftLimitSet(DomainEvent):
    type: ClassVar[str] = "OverdraftLimitSet"
    limit: Decimal
    set_by: str | None = None
    minor_units: int = field(default=2, compare=False, repr=False)

    def to_data(self) -> dict[str, Any]:
        return {"limit": format_money(self.limit, self.minor_units), "set_by": self.set_by}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> OverdraftLimitSet:
        limit = Decimal(data["limit"])
        return cls(limit, data.get("set_by"), _stored_places(limit))


@dataclass(frozen=True, slots=True)
class AccountFrozen(DomainEvent):
    """`reason` and `by` are for auditors and admins; a customer's `/events` omits them."""

    type: ClassVar[str] = "AccountFrozen"
    reason: str
    by: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> AccountFrozen:
        return cls(reason=data.get("reason") or "", by=data.get("by"))


@dataclass(frozen=True, slots=True)
class AccountUnfrozen(DomainEvent):
    type: ClassVar[str] = "AccountUnfrozen"
    by: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"by": self.by}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> AccountUnfrozen:
        return cls(by=data.get("by"))


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.type: cls
    for cls in (
        AccountCreated,
        MoneyDeposited,
        MoneyWithdrawn,
        AccountClosed,
        TransferSent,
        TransferReceived,
        HoldPlaced,
        HoldCaptured,
        HoldVoided,
        HoldExpired,
        OverdraftLimitSet,
        AccountFrozen,
        AccountUnfrozen,
    )
}


def _stored_places(amount: Decimal) -> int:
    """The digits an amount was recorded with ("150" has 0, "1.500" has 3): re-encoding an
    event gives back the same text."""
    exponent = amount.as_tuple().exponent
    return min(-exponent, MAX_MINOR_UNITS) if isinstance(exponent, int) and exponent < 0 else 0


#: Fields of an event's `data` a customer's `/events` leaves out: who froze the account and
#: why are for auditors and admins (compliance forbids tipping off the holder).
HIDDEN_FROM_CUSTOMERS: dict[str, frozenset[str]] = {
    AccountFrozen.type: frozenset({"reason", "by"}),
    AccountUnfrozen.type: frozenset({"by"}),
}


def customer_data(type_name: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` of an event as a customer may read it (`HIDDEN_FROM_CUSTOMERS`)."""
    hidden = HIDDEN_FROM_CUSTOMERS.get(type_name)
    if hidden is None:
        return data
    return {key: value for key, value in data.items() if key not in hidden}


def event_from_stored(type_name: str, data: dict[str, Any]) -> DomainEvent:
    """Rebuild a domain event from its stored type and (already upcast) data."""
    try:
        cls = EVENT_TYPES[type_name]
    except KeyError:
        raise ValueError(f"unknown event type {type_name!r}") from None
    return cls.from_data(data)
