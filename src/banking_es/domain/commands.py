"""Commands: what a caller asks the bank to do, imperative and immutable."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class OpenAccount:
    owner_name: str
    initial_balance: Decimal
    currency: str
    owner_id: str | None = None


@dataclass(frozen=True, slots=True)
class Deposit:
    account_id: str
    amount: Decimal
    description: str | None = None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Withdraw:
    account_id: str
    amount: Decimal
    description: str | None = None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class CloseAccount:
    account_id: str
    reason: str
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    from_account_id: str
    to_account_id: str
    amount: Decimal
    description: str | None = None


@dataclass(frozen=True, slots=True)
class SetOverdraftLimit:
    account_id: str
    limit: Decimal
    set_by: str | None = None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class FreezeAccount:
    account_id: str
    reason: str
    by: str | None = None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class UnfreezeAccount:
    account_id: str
    by: str | None = None
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class PlaceHold:
    account_id: str
    amount: Decimal
    to_account_id: str | None = None
    #: Seconds until the hold expires (None: 7 days).
    expires_in: int | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class CaptureHold:
    hold_id: str
    #: None: the whole hold.
    amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class VoidHold:
    hold_id: str


StreamCommand = (
    Deposit | Withdraw | CloseAccount | SetOverdraftLimit | FreezeAccount | UnfreezeAccount
)
