"""Request and response shapes (separate from domain objects), with exact money.

msgspec models: `api/fields.py` checks requests against them, `api/openapi.py` documents them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from msgspec import Meta, Struct

from banking_es.api.fields import Check, FieldError
from banking_es.api.jsonbody import BadNumber
from banking_es.api.ranges import INT4_MAX
from banking_es.domain.money import (
    MAX_INTEGER_DIGITS,
    MAX_MINOR_UNITS,
    decimal_places,
    minor_units,
    to_money,
)

#: ASCII digits only (`\d` would take any script's, e.g. "٥" for 5), the whole string.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_TOO_LARGE = Decimal(10) ** MAX_INTEGER_DIGITS
_MONEY_SCHEMA = {
    "oneOf": [
        {"type": "string", "pattern": r"^-?[0-9]{1,15}(\.[0-9]+)?$", "example": "500.50"},
        {"type": "number", "example": 500.5},
    ],
    "description": "At most 15 integer digits and as many decimals as the account's currency"
    " has (USD 2, JPY 0, BHD 3); no exponents, NaN or Infinity.",
}


def _money(value: Any, places: int = MAX_MINOR_UNITS) -> Decimal:
    if isinstance(value, BadNumber):
        raise FieldError(value.reason)
    if isinstance(value, bool) or value is None:
        raise FieldError("must be a number or a decimal string")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise FieldError("must be a decimal number such as 500.50")
        amount = Decimal(value)
    else:
        raise FieldError("must be a number or a decimal string")
    if not amount.is_finite():
        raise FieldError("must be a finite number")
    # The magnitude first: quantizing a 30-digit number would overflow the context.
    if abs(amount) >= _TOO_LARGE:
        raise FieldError(f"must have at most {MAX_INTEGER_DIGITS} integer digits")
    # The account's currency decides its decimals (the domain checks them); beyond any
    # currency's is wrong for every account.
    given = decimal_places(amount)
    if given > places:
        raise FieldError(f"must have at most {places} decimal places")
    return to_money(amount, max(given, 2))


def _positive(value: Any) -> Decimal:
    amount = _money(value)
    if amount <= 0:
        raise FieldError("must be greater than zero")
    return amount


def _non_negative(value: Any, before: Mapping[str, Any]) -> Decimal:
    # An opening balance has its currency beside it (declared before it): an unusable code
    # is checked as the 2 decimals of old, an absent one (DEFAULT_CURRENCY) by the domain.
    if "currency" not in before:
        places = 2
    else:
        currency = before["currency"]
        places = MAX_MINOR_UNITS if currency is None else minor_units(currency)
    amount = _money(value, places)
    if amount < 0:
        raise FieldError("must be non-negative")
    return amount


def _limit(value: Any) -> Decimal:
    # The account's currency decides the decimals: the domain checks them (400 as here).
    amount = _money(value)
    if amount < 0:
        raise FieldError("must be non-negative")
    return amount


PositiveAmount = Annotated[Decimal, Check(_positive), Meta(extra_json_schema=_MONEY_SCHEMA)]
LimitAmount = Annotated[Decimal, Check(_limit), Meta(extra_json_schema=_MONEY_SCHEMA)]
NonNegativeAmount = Annotated[
    Decimal, Check(_non_negative, with_fields=True), Meta(extra_json_schema=_MONEY_SCHEMA)
]


def storable_text(value: str) -> str:
    """Text that every backend stores as given: no NUL, no lone surrogate (not UTF-8)."""
    if "\x00" in value:
        raise FieldError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError("must be valid Unicode text") from None
    return value


def _trimmed_name(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("must be a string")
    name = storable_text(value).strip()
    if not name:
        raise FieldError("must not be empty")
    if len(name) > 200:
        raise FieldError("must be at most 200 characters")
    return name


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
        raise FieldError("must be a 3-letter ISO 4217 code such as USD")
    return value.upper()


def _optional_text(limit: int) -> Any:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise FieldError("must be a string")
        if len(value) > limit:
            raise FieldError(f"must be at most {limit} characters")
        return storable_text(value)

    return check


OwnerName = Annotated[str, Check(_trimmed_name), Meta(max_length=200)]
Currency = Annotated[str, Check(_currency), Meta(examples=["USD"])]
Description = Annotated[str, Check(_optional_text(500)), Meta(max_length=500)]
Reason = Description
Version = Annotated[int, Meta(ge=0, le=INT4_MAX)]
_UUID_TEXT = re.compile(r"[0-9a-fA-F-]{36}")


def _uuid(value: Any) -> str:
    """An id in its canonical form (lowercase, dashes) for the command."""
    if not isinstance(value, str):
        raise FieldError("must be a string")
    if _UUID_TEXT.fullmatch(value):
        try:
            return str(UUID(value))
        except ValueError:
            pass
    raise FieldError("must be a UUID")


Uuid = Annotated[str, Check(_uuid), Meta(pattern=r"^[0-9a-fA-F-]{36}$")]


class _Body(Struct, forbid_unknown_fields=True):
    """A request body (checked by `api/fields.py`, which refuses unknown fields)."""


class CreateAccountRequest(_Body, kw_only=True):
    owner_name: OwnerName
    currency: Currency | None = None  # before initial_balance, whose decimals it decides
    initial_balance: NonNegativeAmount


class MoneyRequest(_Body):
    amount: PositiveAmount
    expected_version: Version | None = None
    description: Description | None = None


class CloseAccountRequest(_Body):
    reason: Reason | None = None
    expected_version: Version | None = None


class OverdraftRequest(_Body):
    overdraft_limit: LimitAmount


class FreezeRequest(_Body):
    reason: Reason


class TransferRequest(_Body):
    from_account_id: Uuid
    to_account_id: Uuid
    amount: PositiveAmount
    description: Description | None = None


# ---- responses (documentation; handlers render bytes directly) --------------------------


class ListedAccountOut(Struct, kw_only=True):
    """The account object: a row of `GET /accounts`; every other answer with an account is
    `AccountOut` (the same, plus the validation rules' warnings)."""

    id: str
    owner_name: str
    balance: Annotated[str, Meta(examples=["1500.00"])]
    available: Annotated[
        str, Meta(examples=["1500.00"], description="balance - pending holds + overdraft_limit")
    ]
    overdraft_limit: Annotated[str, Meta(examples=["0.00"])]
    currency: str
    status: Literal["open", "closed", "frozen"]
    version: int
    created_at: datetime
    updated_at: datetime


class AccountOut(ListedAccountOut, kw_only=True):
    warnings: list[str] | None = None


class EventOut(Struct):
    event_id: str
    position: int
    version: int
    type: str
    data: dict[str, Any]
    recorded_at: datetime


class TransactionOut(Struct, kw_only=True):
    id: str
    type: Literal[
        "opening", "deposit", "withdrawal", "transfer_in", "transfer_out", "hold", "hold_capture"
    ]
    amount: str
    balance_after: str
    description: str | None
    version: int
    transfer_id: str | None
    occurred_at: datetime
    #: Only on `hold` rows: where the hold stands (no money moves until it is captured).
    status: Literal["pending", "captured", "voided", "expired"] | None = None


class TransferOut(Struct, kw_only=True):
    id: str
    from_account_id: str
    to_account_id: str
    amount: str
    currency: str
    status: Literal["completed"]
    created_at: datetime
    warnings: list[str] | None = None


class AccountPage(Struct):
    data: list[ListedAccountOut]
    has_more: bool
    next_cursor: str | None


class EventPage(Struct):
    data: list[EventOut]
    has_more: bool
    next_cursor: str | None


class TransactionPage(Struct):
    data: list[TransactionOut]
    has_more: bool
    next_cursor: str | None


class FieldProblem(Struct):
    field: str
    message: str


class Problem(Struct, kw_only=True):
    """The error format of every 4xx and 5xx answer (RFC 9457 plus `error` and `code`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    error: str
    code: str
    errors: list[FieldProblem] | None = None
    current_version: int | None = None
