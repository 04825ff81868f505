"""Money is `Decimal` with exactly two places; never a binary float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from banking_es.domain.errors import InvalidAmount

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_INTEGER_DIGITS = 15
#: The largest amount or balance: 15 integer digits and 2 decimals.
MAX_AMOUNT = Decimal("999999999999999.99")


def to_money(value: Decimal | int | str) -> Decimal:
    """Turn an exact value into a 2-place Decimal, refusing what money cannot be.

    Raises `InvalidAmount` for NaN, infinities, more than 2 decimal places or more
    than 15 integer digits. Sign is the caller's business.
    """
    if isinstance(value, bool):
        raise InvalidAmount("amount must be a number, not a boolean")
    if isinstance(value, float):
        raise InvalidAmount("amount must be an exact number (Decimal, int or string), not a float")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise InvalidAmount(f"amount {value!r} is not a number") from None
    if not amount.is_finite():
        raise InvalidAmount("amount must be a finite number")
    # The magnitude first: quantizing a 30-digit number would overflow the context.
    if abs(amount) >= MAX_AMOUNT + CENT:
        raise InvalidAmount(f"amount must have at most {MAX_INTEGER_DIGITS} integer digits")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and amount != amount.quantize(CENT):
        raise InvalidAmount("amount must have at most 2 decimal places")
    return amount.quantize(CENT) + 0  # "+ 0" turns a negative zero into zero


def positive_money(value: Decimal | int | str) -> Decimal:
    """A transaction amount: valid money and strictly greater than zero."""
    amount = to_money(value)
    if amount <= ZERO:
        raise InvalidAmount("amount must be greater than zero")
    return amount


def format_money(amount: Decimal) -> str:
    """The wire form of an amount: a string with exactly two decimals, e.g. "1500.00"."""
    return f"{amount.quantize(CENT) + 0:f}"
