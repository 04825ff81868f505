"""The HTTP request schema's money field must refuse bad amounts with a validation error."""

from __future__ import annotations

from decimal import Decimal

import pytest

from banking_es.api.fields import build
from banking_es.api.schemas import MoneyRequest


class ValidationError(Exception):
    """The problems `build` found (what the API answers 400 with)."""


def validate(data: dict[str, object]) -> MoneyRequest:
    problems: list[dict[str, str]] = []
    request = build(MoneyRequest, data, problems)
    if request is None:
        raise ValidationError(problems)
    return request


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        *[("500", "500.00"), ("500.5", "500.50"), (Decimal("0.1"), "0.10"), (7, "7.00")],
        *[("0.001", "0.001"), ("1.2345", "1.2345")],  # BHD, UYW: the account decides
    ],
)
def test_money_request_accepts_exact_amounts(amount: object, expected: str) -> None:
    assert str(validate({"amount": amount}).amount) == expected


@pytest.mark.parametrize(
    "amount",
    [
        *("0", "-1", "0.00001", "1e3", "1000000000000000", True, None, "", "NaN"),
        *("\u0665", "1\u0660", "\uff15", "5\n", " 5", "5 "),  # other scripts' digits, blanks
        "1." + "0" * 29 + "1",  # beyond 28 digits: must not be rounded to 1
    ],
)
def test_money_request_rejects_invalid_amounts_as_validation_errors(amount: object) -> None:
    with pytest.raises(ValidationError):
        validate({"amount": amount})


@pytest.mark.parametrize("amount", ["1" * 30 + ".001", Decimal("9" * 27 + ".125")])
def test_money_request_rejects_huge_amounts_with_extra_decimals_as_validation_errors(
    amount: object,
) -> None:
    try:
        validate({"amount": amount})
    except ValidationError:
        return
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped instead of ValidationError") from exc
    raise AssertionError("accepted")
