"""Money is an exact `Decimal` with its currency's minor-unit digits; never a binary float.

USD has 2 decimals, JPY 0, BHD 3 (ISO 4217, `currencies.MINOR_UNITS`). A code outside the
table (an account opened before currencies were checked) keeps 2, as every account had.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from banking_es.domain.currencies import MINOR_UNITS
from banking_es.domain.errors import InvalidAmount

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_INTEGER_DIGITS = 15
#: The largest USD amount or balance: 15 integer digits and 2 decimals.
MAX_AMOUNT = Decimal("999999999999999.99")
#: Every amount and balance stays below this, whatever its currency: 15 integer digits.
LIMIT = Decimal(10) ** MAX_INTEGER_DIGITS
#: The most decimals any accepted currency has (what a request may carry before its account
#: is known).
MAX_MINOR_UNITS = max(MINOR_UNITS.values())
_QUANTA = {places: Decimal(1).scaleb(-places) for places in range(MAX_MINOR_UNITS + 1)}
_LEGACY_PLACES = 2


def is_currency(code: str) -> bool:
    """Whether an account may be opened in `code`: an active ISO 4217 currency."""
    return code in MINOR_UNITS


def minor_units(currency: str) -> int:
    """The decimals of `currency`'s amounts (2 for a code outside the table)."""
    return MINOR_UNITS.get(currency, _LEGACY_PLACES)


def decimal_places(amount: Decimal) -> int:
    """The significant decimals of a finite amount: 1.500 has 1, 150 has 0."""
    # Exactly, from the digits: `normalize()` would round past 28 digits (1.000...0001 -> 1).
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    if not amount:
        return 0
    places, end = -exponent, len(digits)
    while places > 0 and end > 0 and digits[end - 1] == 0:
        places, end = places - 1, end - 1
    return max(0, places)


def to_money(value: Decimal | int | str, places: int = 2, field: str = "amount") -> Decimal:
    """Turn an exact value into a Decimal with `places` decimals, refusing what money cannot be.

    Raises `InvalidAmount` (naming `field`) for NaN, infinities, more than `places` significant
    decimals or more than 15 integer digits. Sign is the caller's business.
    """
    if isinstance(value, bool):
        raise InvalidAmount(f"{field} must be a number, not a boolean", field)
    if isinstance(value, float):
        raise InvalidAmount(
            f"{field} must be an exact number (Decimal, int or string), not a float", field
        )
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise InvalidAmount(f"{field} {value!r} is not a number", field) from None
    if not amount.is_finite():
        raise InvalidAmount(f"{field} must be a finite number", field)
    # The magnitude first: quantizing a 30-digit number would overflow the context.
    if abs(amount) >= LIMIT:
        raise InvalidAmount(f"{field} must have at most {MAX_INTEGER_DIGITS} integer digits", field)
    quantum = _QUANTA[places]
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -places and amount != amount.quantize(quantum):
        if places == 0:
            raise InvalidAmount(f"{field} must be a whole number in this currency", field)
        raise InvalidAmount(f"{field} must have at most {places} decimal places", field)
    return amount.quantize(quantum) + 0  # "+ 0" turns a negative zero into zero


def positive_money(value: Decimal | int | str, places: int = 2) -> Decimal:
    """A transaction amount: valid money and strictly greater than zero."""
    amount = to_money(value, places)
    if amount <= ZERO:
        raise InvalidAmount("amount must be greater than zero")
    return amount


def format_money(amount: Decimal, places: int = 2) -> str:
    """The wire form of an amount: a string with exactly `places` decimals ("1500.00", "150").

    Never rounds: an amount recorded with more decimals than its currency now has (see the
    README) keeps its own digits."""
    quantized = amount.quantize(_QUANTA[places])
    if quantized != amount:
        quantized = amount
    return f"{quantized + 0:f}"


def format_in(amount: Decimal, currency: str) -> str:
    """`format_money` with the decimals of `currency`: what responses and events carry."""
    return format_money(amount, minor_units(currency))
