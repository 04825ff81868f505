"""DEFAULT_CURRENCY passes the check an account's currency passes, or the service won't start."""

from __future__ import annotations

import pytest

from banking_es.config import SettingsError, load_settings


@pytest.mark.parametrize("currency", ["USD", "JPY", "BHD", "XOF"])
def test_an_active_currency_is_a_valid_default(currency: str) -> None:
    assert load_settings(default_currency=currency).default_currency == currency


@pytest.mark.parametrize("currency", ["XXX", "XAU", "XDR", "CLF", "ABC", "usd", "EURO"])
def test_anything_else_is_refused_naming_the_variable(currency: str) -> None:
    with pytest.raises(SettingsError, match="DEFAULT_CURRENCY") as refused:
        load_settings(default_currency=currency)
    assert "\n" not in str(refused.value)
