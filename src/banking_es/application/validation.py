"""Request validation rules (the seed's "Request Validation"): pluggable, async, per kind.

The HTTP schemas check types, formats and ranges (an amount > 0, ids that are UUIDs), the
domain its rules; validation rules are the bank's own policies and may look things up. An
error refuses the request (400 `validation_error` listing every problem of every rule); a
warning lets it through, is returned in the response's `warnings` and logged. Rules run one
after another in registration order on every request of their kind (`account_creation`,
`transaction`, `transfer`): keep them quick. Registering one: docs/redis.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from banking_es.domain.account import Account
from banking_es.domain.money import format_money, minor_units

log = logging.getLogger("banking_es.validation")

ACCOUNT_CREATION = "account_creation"
TRANSACTION = "transaction"
TRANSFER = "transfer"
KINDS = (ACCOUNT_CREATION, TRANSACTION, TRANSFER)

#: A withdrawal (or outgoing transfer) leaving less than this share of the balance warns.
LOW_BALANCE_SHARE = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass
class ValidationResult:
    """What one rule (or all of them together) found."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def error(cls, field_name: str, message: str) -> ValidationResult:
        return cls(errors=[FieldError(field_name, message)])

    @classmethod
    def warning(cls, message: str) -> ValidationResult:
        return cls(warnings=[message])

    @property
    def ok(self) -> bool:
        return not self.errors


AccountLookup = Callable[[str], Awaitable[Account | None]]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request as rules see it: its kind, its fields, and a way to look at accounts.

    `account(id)` gives the account as cached (possibly a moment behind; fine for advice)."""

    kind: str
    data: Mapping[str, Any]
    account: AccountLookup
    user_id: str | None = None


class ValidationRule(Protocol):
    """A named check of one kind of request."""

    name: str

    async def validate(self, request: RequestContext) -> ValidationResult: ...


class RequestValidator:
    """The rules per kind; `validate` runs a kind's rules in order and merges them."""

    def __init__(
        self,
        *,
        on_failure: Callable[[str], None] = lambda rule: None,
        on_warning: Callable[[str], None] = lambda rule: None,
    ) -> None:
        self._rules: dict[str, list[ValidationRule]] = {kind: [] for kind in KINDS}
        self._on_failure = on_failure
        self._on_warning = on_warning

    def register(self, kind: str, rule: ValidationRule) -> None:
        self._rules.setdefault(kind, []).append(rule)

    def rules(self, kind: str) -> list[ValidationRule]:
        return list(self._rules.get(kind, []))

    async def validate(self, request: RequestContext) -> ValidationResult:
        rules = self._rules.get(request.kind, [])
        # One after another, not `gather`: the rules of a request are quick (the built-in
        # ones read the cached account), and a task per rule cost more than the rules.
        results = [await rule.validate(request) for rule in rules]
        merged = ValidationResult()
        for rule, result in zip(rules, results, strict=True):
            if result.errors:
                self._on_failure(rule.name)
                merged.errors.extend(result.errors)
            for warning in result.warnings:
                self._on_warning(rule.name)
                log.info("validation warning (%s): %s", rule.name, warning)
                merged.warnings.append(warning)
        return merged


# ---- the built-in rules -------------------------------------------------------------------


class LowRemainingBalanceRule:
    """Warns when a withdrawal or outgoing transfer leaves less than 1% of the balance."""

    name = "low_remaining_balance"

    def __init__(self, share: Decimal = LOW_BALANCE_SHARE) -> None:
        self.share = share

    async def validate(self, request: RequestContext) -> ValidationResult:
        data = request.data
        if request.kind == TRANSACTION and data.get("operation") == "withdraw":
            account_id = data.get("account_id")
        elif request.kind == TRANSFER:
            account_id = data.get("from_account_id")
        else:
            return ValidationResult()
        amount = data["amount"]  # parsed by the schema: a positive Decimal, the id a UUID
        account = await request.account(str(account_id))
        if account is None or account.balance <= 0 or amount > account.balance:
            return ValidationResult()  # unknown account or not enough money: the command says
        left = account.balance - amount
        places = minor_units(account.currency)
        if left >= account.balance * self.share:
            return ValidationResult()
        return ValidationResult.warning(
            f"this leaves {format_money(left, places)} {account.currency} on account {account.id}, "
            f"less than {self.share * 100:.0f}% of its balance of "
            f"{format_money(account.balance, places)}"
        )


def default_validator(
    *,
    on_failure: Callable[[str], None] = lambda rule: None,
    on_warning: Callable[[str], None] = lambda rule: None,
) -> RequestValidator:
    """The validator with the built-in rules registered."""
    validator = RequestValidator(on_failure=on_failure, on_warning=on_warning)
    validator.register(TRANSACTION, LowRemainingBalanceRule())
    validator.register(TRANSFER, LowRemainingBalanceRule())
    return validator
