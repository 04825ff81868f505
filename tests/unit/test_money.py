"""Money rules (API.md "Money"): exact decimals, at most 2 places and 15 integer digits."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banking_es.domain.errors import InvalidAmount
from banking_es.domain.money import (
    CENT,
    MAX_AMOUNT,
    MAX_INTEGER_DIGITS,
    ZERO,
    format_money,
    positive_money,
    to_money,
)

FIFTEEN_NINES = "9" * 15


def _is_exactly(value: Decimal, text: str) -> bool:
    """Same number *and* same representation (so `1.5` is not taken for `1.50`)."""
    return isinstance(value, Decimal) and str(value) == text


# ---- constants ------------------------------------------------------------------------------


def test_money_constants_describe_fifteen_integer_digits_and_two_places() -> None:
    assert MAX_INTEGER_DIGITS == 15
    assert str(MAX_AMOUNT) == "999999999999999.99"
    assert str(CENT) == "0.01"
    assert str(ZERO) == "0.00"


# ---- to_money: accepted values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("500", "500.00"),
        ("500.5", "500.50"),
        ("500.50", "500.50"),
        ("0.1", "0.10"),
        ("0.01", "0.01"),
        ("0", "0.00"),
        ("-12.34", "-12.34"),
        (500, "500.00"),
        (0, "0.00"),
        (-7, "-7.00"),
        (Decimal("500.5"), "500.50"),
        (Decimal("0.10"), "0.10"),
    ],
)
def test_to_money_accepts_up_to_two_decimals_and_returns_two_places(
    value: Decimal | int | str, expected: str
) -> None:
    assert _is_exactly(to_money(value), expected)


@pytest.mark.parametrize("value", ["1.500", "1.5000000", Decimal("1.500"), "2.000"])
def test_to_money_accepts_trailing_zeros_beyond_two_places_because_the_value_has_two(
    value: Decimal | str,
) -> None:
    # "At most 2 decimal places" is about the value: 1.500 is exactly 1.50, no rounding happens.
    assert to_money(value) == Decimal(str(value))
    assert to_money(value).as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (FIFTEEN_NINES, FIFTEEN_NINES + ".00"),
        (FIFTEEN_NINES + ".99", FIFTEEN_NINES + ".99"),
        ("-" + FIFTEEN_NINES + ".99", "-" + FIFTEEN_NINES + ".99"),
        (int(FIFTEEN_NINES), FIFTEEN_NINES + ".00"),
        ("100000000000000", "100000000000000.00"),
    ],
)
def test_to_money_accepts_fifteen_integer_digits(value: int | str, expected: str) -> None:
    assert _is_exactly(to_money(value), expected)


def test_to_money_returns_a_decimal_never_a_float() -> None:
    for value in ("0.1", 3, Decimal("2.5")):
        result = to_money(value)
        assert type(result) is Decimal
    assert to_money("0.1") + to_money("0.2") == Decimal("0.30")


# ---- to_money: rejected values ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["1.505", "0.001", "1.001", "-0.001", Decimal("0.005"), "12.345", "0.0000001"],
)
def test_to_money_rejects_a_third_significant_decimal(value: Decimal | str) -> None:
    with pytest.raises(InvalidAmount, match="at most 2 decimal places"):
        to_money(value)


@pytest.mark.parametrize(
    "value",
    [
        "1" + "0" * 15,
        "1000000000000000.00",
        "9999999999999999",
        "-1000000000000000",
        "1000000000000000.5",
        10**15,
        Decimal("1E+15"),
    ],
)
def test_to_money_rejects_sixteen_integer_digits(value: Decimal | int | str) -> None:
    with pytest.raises(InvalidAmount):
        to_money(value)


def test_to_money_names_the_digit_limit() -> None:
    with pytest.raises(InvalidAmount, match="at most 15 integer digits"):
        to_money("1" + "0" * 15)


@pytest.mark.parametrize(
    "value",
    ["NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf", Decimal("NaN"), Decimal("-Infinity")],
)
def test_to_money_rejects_nan_and_infinity(value: Decimal | str) -> None:
    with pytest.raises(InvalidAmount, match="finite"):
        to_money(value)


@pytest.mark.parametrize("value", ["", "abc", "1.2.3", "12,50", "$5", "five"])
def test_to_money_rejects_text_that_is_not_a_number(value: str) -> None:
    with pytest.raises(InvalidAmount, match="is not a number"):
        to_money(value)


@pytest.mark.parametrize("value", [True, False])
def test_to_money_rejects_booleans_although_they_are_ints(value: bool) -> None:
    with pytest.raises(InvalidAmount, match="must be a number"):
        to_money(value)


def test_to_money_rejects_the_float_point_one_since_its_binary_value_is_not_ten_cents() -> None:
    with pytest.raises(InvalidAmount):
        to_money(0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0.5, 1000.0, 2.25])
def test_to_money_rejects_every_binary_float(value: float) -> None:
    with pytest.raises((InvalidAmount, TypeError)):
        to_money(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1" * 30 + ".001", Decimal("9" * 27 + ".125")])
def test_to_money_rejects_huge_values_with_extra_decimals_as_invalid_amount(
    value: Decimal | str,
) -> None:
    try:
        to_money(value)
    except InvalidAmount:
        return
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped instead of InvalidAmount") from exc
    raise AssertionError("accepted")


# ---- positive_money ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("0.01", "0.01"), (1, "1.00"), ("2.5", "2.50")])
def test_positive_money_accepts_amounts_above_zero(value: int | str, expected: str) -> None:
    assert _is_exactly(positive_money(value), expected)


@pytest.mark.parametrize("value", ["0", "0.00", "-0.01", -5, Decimal("-0")])
def test_positive_money_rejects_zero_and_negative_amounts(value: Decimal | int | str) -> None:
    with pytest.raises(InvalidAmount, match="greater than zero"):
        positive_money(value)


@pytest.mark.parametrize("value", ["0.001", "NaN", "1" + "0" * 15, True, "x"])
def test_positive_money_applies_every_money_rule(value: bool | str) -> None:
    with pytest.raises(InvalidAmount):
        positive_money(value)


def test_positive_money_accepts_the_largest_amount() -> None:
    assert positive_money(FIFTEEN_NINES + ".99") == MAX_AMOUNT


# ---- format_money -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("1500"), "1500.00"),
        (Decimal("1500.5"), "1500.50"),
        (Decimal("0.1"), "0.10"),
        (Decimal("0"), "0.00"),
        (Decimal("-3.2"), "-3.20"),
        (Decimal("1E+3"), "1000.00"),  # never scientific notation on the wire
        (MAX_AMOUNT, "999999999999999.99"),
        (Decimal("1.500"), "1.50"),
    ],
)
def test_format_money_gives_exactly_two_decimals_in_plain_notation(
    amount: Decimal, text: str
) -> None:
    assert format_money(amount) == text


@pytest.mark.parametrize("value", ["-0", "-0.00", Decimal("-0")])
def test_negative_zero_is_formatted_as_plain_zero(value: Decimal | str) -> None:
    assert format_money(to_money(value)) == "0.00"


# ---- properties --------------------------------------------------------------------------------

money_values = st.decimals(
    min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT, places=2, allow_nan=False, allow_infinity=False
)


@given(money_values)
def test_formatted_money_parses_back_to_the_same_value(amount: Decimal) -> None:
    text = format_money(to_money(amount))
    assert Decimal(text) == amount
    integer, _, decimals = text.lstrip("-").partition(".")
    assert len(decimals) == 2
    assert len(integer) <= MAX_INTEGER_DIGITS
    assert "E" not in text
    assert "e" not in text


@given(money_values)
def test_money_text_is_accepted_as_given(amount: Decimal) -> None:
    assert to_money(str(amount)) == amount
    assert to_money(format_money(amount)) == amount


@given(st.integers(min_value=-(10**17), max_value=10**17).filter(lambda n: n % 10 != 0))
def test_any_value_with_a_significant_third_decimal_is_rejected(thousandths: int) -> None:
    with pytest.raises(InvalidAmount):
        to_money(Decimal(thousandths).scaleb(-3))


@given(st.integers(min_value=10**15, max_value=10**30))
def test_any_value_of_sixteen_or_more_integer_digits_is_rejected(units: int) -> None:
    with pytest.raises(InvalidAmount):
        to_money(units)
    with pytest.raises(InvalidAmount):
        to_money(-units)
