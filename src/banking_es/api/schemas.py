"""Request and response shapes (separate from domain objects), with exact money."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

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
        raise PydanticCustomError("money", value.reason)
    if isinstance(value, bool) or value is None:
        raise PydanticCustomError("money", "must be a number or a decimal string")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise PydanticCustomError("money", "must be a decimal number such as 500.50")
        amount = Decimal(value)
    else:
        raise PydanticCustomError("money", "must be a number or a decimal string")
    if not amount.is_finite():
        raise PydanticCustomError("money", "must be a finite number")
    # The magnitude first: quantizing a 30-digit number would overflow the context.
    if abs(amount) >= _TOO_LARGE:
        raise PydanticCustomError("money", f"must have at most {MAX_INTEGER_DIGITS} integer digits")
    # The account's currency decides its decimals (the domain checks them); beyond any
    # currency's is wrong for every account.
    given = decimal_places(amount)
    if given > places:
        raise PydanticCustomError("money", f"must have at most {places} decimal places")
    return to_money(amount, max(given, 2))


def _positive(value: Any) -> Decimal:
    amount = _money(value)
    if amount <= 0:
        raise PydanticCustomError("money", "must be greater than zero")
    return amount


def _non_negative(value: Any, info: ValidationInfo) -> Decimal:
    # An opening balance has its currency beside it (declared before it): an unusable code
    # is checked as the 2 decimals of old, an absent one (DEFAULT_CURRENCY) by the domain.
    if "currency" not in info.data:
        places = 2
    else:
        currency = info.data["currency"]
        places = MAX_MINOR_UNITS if currency is None else minor_units(currency)
    amount = _money(value, places)
    if amount < 0:
        raise PydanticCustomError("money", "must be non-negative")
    return amount


PositiveAmount = Annotated[Decimal, PlainValidator(_positive), WithJsonSchema(_MONEY_SCHEMA)]
NonNegativeAmount = Annotated[Decimal, PlainValidator(_non_negative), WithJsonSchema(_MONEY_SCHEMA)]


def storable_text(value: str, kind: str = "text") -> str:
    """Text that every backend stores as given: no NUL, no lone surrogate (not UTF-8)."""
    if "\x00" in value:
        raise PydanticCustomError(kind, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(kind, "must be valid Unicode text") from None
    return value


def _trimmed_name(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("name", "must be a string")
    name = storable_text(value, "name").strip()
    if not name:
        raise PydanticCustomError("name", "must not be empty")
    if len(name) > 200:
        raise PydanticCustomError("name", "must be at most 200 characters")
    return name


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
        raise PydanticCustomError("currency", "must be a 3-letter ISO 4217 code such as USD")
    return value.upper()


def _optional_text(limit: int) -> Any:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise PydanticCustomError("text", "must be a string")
        if len(value) > limit:
            raise PydanticCustomError("text", f"must be at most {limit} characters")
        return storable_text(value)

    return check


OwnerName = Annotated[
    str, PlainValidator(_trimmed_name), WithJsonSchema({"type": "string", "maxLength": 200})
]
Currency = Annotated[
    str, PlainValidator(_currency), WithJsonSchema({"type": "string", "example": "USD"})
]
Description = Annotated[
    str | None,
    PlainValidator(_optional_text(500)),
    WithJsonSchema({"type": "string", "maxLength": 500}),
]
Reason = Annotated[
    str | None,
    PlainValidator(_optional_text(500)),
    WithJsonSchema({"type": "string", "maxLength": 500}),
]
Version = Annotated[StrictInt, Field(ge=0, le=INT4_MAX)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateAccountRequest(_Body):
    owner_name: OwnerName
    currency: Currency | None = None  # before initial_balance, whose decimals it decides
    initial_balance: NonNegativeAmount


class MoneyRequest(_Body):
    amount: PositiveAmount
    expected_version: Version | None = None
    description: Description = None


class CloseAccountRequest(_Body):
    reason: Reason = None
    expected_version: Version | None = None


class TransferRequest(_Body):
    from_account_id: Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{36}$")]
    to_account_id: Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{36}$")]
    amount: PositiveAmount
    description: Description = None


# ---- responses (documentation; handlers render bytes directly) --------------------------


class AccountOut(BaseModel):
    id: str
    owner_name: str
    balance: str = Field(examples=["1500.00"])
    currency: str
    status: Literal["open", "closed"]
    version: int
    created_at: datetime
    updated_at: datetime
    warnings: list[str] | None = None


class EventOut(BaseModel):
    event_id: str
    position: int
    version: int
    type: str
    data: dict[str, Any]
    recorded_at: datetime


class TransactionOut(BaseModel):
    id: str
    type: Literal["opening", "deposit", "withdrawal", "transfer_in", "transfer_out"]
    amount: str
    balance_after: str
    description: str | None
    version: int
    transfer_id: str | None
    occurred_at: datetime


class TransferOut(BaseModel):
    id: str
    from_account_id: str
    to_account_id: str
    amount: str
    currency: str
    status: Literal["completed"]
    created_at: datetime
    warnings: list[str] | None = None


class AccountPage(BaseModel):
    data: list[AccountOut]
    has_more: bool
    next_cursor: str | None


class EventPage(BaseModel):
    data: list[EventOut]
    has_more: bool
    next_cursor: str | None


class TransactionPage(BaseModel):
    data: list[TransactionOut]
    has_more: bool
    next_cursor: str | None


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The error format of every 4xx and 5xx answer (RFC 9457 plus `error` and `code`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    error: str
    code: str
    errors: list[FieldProblem] | None = None
    current_version: int | None = None
