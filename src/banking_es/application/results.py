"""What a command answers, and the stored form of an answer that an Idempotency-Key replays.

A stored answer is a deterministic serialisation of the result (with the validation
rules' warnings) or of the refusal. One stored with the command's events is made before
the append: the times the append sets (an account's `updated_at`, a new account's or a
transfer's `created_at`) are left out, and a replay reads them from the recorded event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from banking_es.application.errors import NotFound, VersionConflict
from banking_es.domain import errors as domain_errors
from banking_es.domain.account import Account
from banking_es.domain.money import format_in

#: The `status` of a record whose body is a stored answer (one of an earlier release holds
#: the HTTP status of the response it stored, and that response as its body).
STORED_ANSWER = 0

#: The refusals remembered under a key: the command ran and said no. Malformed requests
#: (400) and unavailability are not remembered: a retry may succeed.
REMEMBERED_REFUSALS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        NotFound,
        VersionConflict,
        domain_errors.AccountClosed,
        domain_errors.InsufficientFunds,
        domain_errors.BalanceNotZero,
        domain_errors.BalanceLimitExceeded,
        domain_errors.CurrencyMismatch,
        domain_errors.AccountFrozen,
        domain_errors.HoldNotPending,
        domain_errors.AmountExceedsHold,
        domain_errors.HoldsPending,
        domain_errors.TooManyHolds,
    )
}


@dataclass(slots=True)
class TransferResult:
    """A transfer as its callers see it (its id is its `TransferSent` event's)."""

    id: str
    from_account_id: str
    to_account_id: str
    amount: Decimal
    currency: str
    description: str | None
    created_at: datetime | None
    status: str = "completed"


@dataclass(frozen=True, slots=True)
class HoldParties:
    """Whose a hold is: its account and its destination, if any."""

    id: str
    account_id: str
    to_account_id: str | None


@dataclass(slots=True)
class HoldResult:
    """A hold as its callers see it (its id is its `HoldPlaced` event's). `status`:
    pending, captured, voided or expired (also once past `expires_at`, event or not)."""

    id: str
    account_id: str
    to_account_id: str | None
    amount: Decimal
    captured_amount: Decimal
    currency: str
    status: str
    expires_at: datetime
    description: str | None
    created_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "to_account_id": self.to_account_id,
            "amount": format_in(self.amount, self.currency),
            "captured_amount": format_in(self.captured_amount, self.currency),
            "currency": self.currency,
            "status": self.status,
            "expires_at": self.expires_at.isoformat(),
            "description": self.description,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }

    @classmethod
    def from_json(cls, h: dict[str, Any]) -> HoldResult:
        created = h["created_at"]
        return cls(
            h["id"],
            h["account_id"],
            h["to_account_id"],
            Decimal(h["amount"]),
            Decimal(h["captured_amount"]),
            h["currency"],
            h["status"],
            datetime.fromisoformat(h["expires_at"]),
            h["description"],
            datetime.fromisoformat(created) if created else None,
        )


Result = Account | TransferResult | HoldResult


def is_remembered(refusal: Exception) -> bool:
    return REMEMBERED_REFUSALS.get(type(refusal).__name__) is type(refusal)


def store_result(result: Result, warnings: Sequence[str], *, before_append: bool = False) -> bytes:
    """The stored answer of a result and its warnings; `before_append` leaves out the times
    the append sets (the result's `updated_at` is still the state's before it)."""
    if isinstance(result, Account):
        state = result.to_snapshot()
        if before_append:
            state["updated_at"] = None
        return orjson.dumps({"account": state, "warnings": warnings})
    if isinstance(result, HoldResult):
        return orjson.dumps({"hold": result.to_json(), "warnings": warnings})
    return orjson.dumps(
        {
            "warnings": warnings,
            "transfer": {
                "id": result.id,
                "from_account_id": result.from_account_id,
                "to_account_id": result.to_account_id,
                "amount": format_in(result.amount, result.currency),
                "currency": result.currency,
                "description": result.description,
                "created_at": result.created_at.isoformat() if result.created_at else None,
                "status": result.status,
            },
        }
    )


def store_refusal(refusal: Exception) -> bytes:
    """The stored answer of a remembered refusal: its kind, message and attributes."""
    return orjson.dumps(
        {
            "refused": type(refusal).__name__,
            "message": str(refusal),
            "attributes": vars(refusal),
        },
        default=str,
    )


def load_answer(body: bytes) -> tuple[Result | Exception, tuple[str, ...]]:
    """The result or refusal of a stored answer, and its warnings. The times left out of
    an answer stored before its append are None."""
    answer: dict[str, Any] = orjson.loads(body)
    warnings = tuple(answer.get("warnings", ()))
    if "account" in answer:
        return Account.from_snapshot(answer["account"]), warnings
    if "hold" in answer:
        return HoldResult.from_json(answer["hold"]), warnings
    if "transfer" in answer:
        t = answer["transfer"]
        created = t["created_at"]
        transfer = TransferResult(
            t["id"],
            t["from_account_id"],
            t["to_account_id"],
            Decimal(t["amount"]),
            t["currency"],
            t["description"],
            datetime.fromisoformat(created) if created else None,
            t["status"],
        )
        return transfer, warnings
    cls = REMEMBERED_REFUSALS[answer["refused"]]
    # Rebuilt without its constructor, whose arguments are not all stored: the message and
    # the attributes are what an answer shows.
    refusal = cls.__new__(cls)
    Exception.__init__(refusal, answer["message"])
    refusal.__dict__.update(answer["attributes"])
    return refusal, warnings
