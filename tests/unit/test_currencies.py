"""The generated currency table against the `iso4217` package, and money by minor unit."""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banking_es.domain.currencies import MINOR_UNITS
from banking_es.domain.errors import InvalidAmount
from banking_es.domain.money import (
    decimal_places,
    format_in,
    format_money,
    is_currency,
    minor_units,
    to_money,
)

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_currencies", ROOT / "scripts/currencies.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_table_is_what_the_installed_package_gives() -> None:
    generator = _generator()
    assert generator.TARGET.read_text(encoding="utf-8") == generator.render(), (
        "src/banking_es/domain/currencies.py is stale: run `make currencies`"
    )
    assert generator.accepted() == MINOR_UNITS


@pytest.mark.parametrize(
    ("code", "units"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("BHD", 3), ("KWD", 3), ("XOF", 0), ("XCD", 2)],
)
def test_active_currencies_have_their_minor_units(code: str, units: int) -> None:
    assert is_currency(code)
    assert minor_units(code) == units


@pytest.mark.parametrize(
    "code",
    [
        *("XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XUA", "XSU", "XAD", "XBA"),
        *("CLF", "BOV", "COU", "MXV", "CHE", "CHW", "USN", "UYI", "ABC", "usd", ""),
    ],
)
def test_x_codes_fund_codes_and_unknown_codes_are_not_currencies(code: str) -> None:
    assert not is_currency(code)


def test_a_code_outside_the_table_keeps_two_decimals_as_before() -> None:
    assert minor_units("ABC") == 2
    assert format_in(Decimal("1.5"), "ABC") == "1.50"


@pytest.mark.parametrize(
    ("currency", "value", "text"),
    [
        *[("JPY", "150", "150"), ("JPY", "150.00", "150"), ("USD", "1.5", "1.50")],
        *[("BHD", "1.5", "1.500"), ("KWD", 2, "2.000"), ("UYW", "0.0001", "0.0001")],
    ],
)
def test_amounts_are_quantized_and_rendered_by_minor_unit(
    currency: str, value: str | int, text: str
) -> None:
    places = minor_units(currency)
    assert format_money(to_money(value, places), places) == text
    assert format_in(to_money(value, places), currency) == text


@pytest.mark.parametrize(
    ("currency", "value"), [("JPY", "1.5"), ("USD", "0.001"), ("BHD", "1.0001")]
)
def test_more_decimals_than_the_currency_has_are_refused(currency: str, value: str) -> None:
    with pytest.raises(InvalidAmount) as refused:
        to_money(value, minor_units(currency), "initial_balance")
    assert refused.value.field == "initial_balance"
    assert str(refused.value).startswith("initial_balance ")


@pytest.mark.parametrize(
    ("value", "places"),
    [
        *[("1.500", 1), ("150", 0), ("1E+3", 0), ("0.00", 0), ("-0.125", 3)],
        ("1." + "0" * 29 + "1", 30),
    ],
)
def test_decimal_places_counts_significant_decimals_exactly(value: str, places: int) -> None:
    assert decimal_places(Decimal(value)) == places


def test_an_amount_stored_with_more_digits_than_its_currency_is_shown_unrounded() -> None:
    assert format_in(Decimal("1.50"), "JPY") == "1.50"
    assert format_in(Decimal("1.00"), "JPY") == "1"


@given(
    st.sampled_from(sorted(set(MINOR_UNITS.values()))),
    st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1),
)
def test_every_value_in_minor_units_round_trips_through_its_text(places: int, units: int) -> None:
    amount = Decimal(units).scaleb(-places)
    text = format_money(to_money(amount, places), places)
    assert Decimal(text) == amount
    assert len(text.partition(".")[2]) == places
    assert to_money(text, places) == amount


@given(st.sampled_from(sorted(set(MINOR_UNITS.values()))), st.integers(1, 10**6))
def test_a_value_one_digit_finer_than_the_currency_is_refused(places: int, units: int) -> None:
    if units % 10 == 0:
        units += 1
    with pytest.raises(InvalidAmount):
        to_money(Decimal(units).scaleb(-(places + 1)), places)
