"""What every stack's deposit route checks, in the same way, and what it answers."""

import json
import re
from decimal import Decimal
from typing import Any

TOKEN = "bench-fixed-token"
AUTHORIZATION = "Bearer " + TOKEN
#: A decimal string only: JSON numbers (floats), NaN, Infinity and exponents are refused.
AMOUNT_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,2})?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)
OPENING = Decimal("1000.00")
OWNER = "Bench Owner"


class _Repeated(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Repeated
    return found


def has_repeated_key(body: bytes) -> bool:
    """True when an object of `body` names a key twice (parsers differ on which one wins).
    Invalid JSON is False here: each stack's own parser refuses it."""
    try:
        json.loads(body, object_pairs_hook=_pairs)
    except _Repeated:
        return True
    except ValueError:
        return False
    return False


def amount_of(text: str) -> Decimal | None:
    """The exact positive amount of a decimal string, or None."""
    if not _AMOUNT.fullmatch(text):
        return None
    amount = Decimal(text)
    return amount if amount > 0 else None


def account(account_id: str, amount: Decimal) -> dict[str, Any]:
    """The account-shaped answer, as plain values (each stack encodes it its own way)."""
    return {
        "id": account_id,
        "owner_name": OWNER,
        "balance": str(OPENING + amount),
        "currency": "EUR",
        "status": "active",
        "version": 2,
    }
