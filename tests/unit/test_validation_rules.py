"""Every built-in request validation rule, and how the validator merges rules."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from banking_es.application.validation import (
    TRANSACTION,
    TRANSFER,
    FieldError,
    LowRemainingBalanceRule,
    RequestContext,
    RequestValidator,
    ValidationResult,
    default_validator,
)
from banking_es.domain.account import Account

ACCOUNT = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


def account(balance: str) -> Account:
    return Account(id=ACCOUNT, owner_name="Ada", balance=Decimal(balance), version=1)


def context(kind: str, balance: str | None = None, **data: object) -> RequestContext:
    async def lookup(account_id: str) -> Account | None:
        return account(balance) if balance is not None and account_id == ACCOUNT else None

    return RequestContext(kind, data, lookup)


@pytest.mark.parametrize(
    ("balance", "amount", "warns"),
    [
        ("100.00", "99.01", True),  # leaves 0.99 < 1.00
        ("100.00", "99.00", False),  # leaves exactly 1%
        ("100.00", "100.00", True),  # leaves nothing
        ("100.00", "100.01", False),  # insufficient funds: the command refuses it
        ("0.00", "1.00", False),
    ],
)
async def test_a_withdrawal_leaving_less_than_one_percent_warns(
    balance: str, amount: str, warns: bool
) -> None:
    rule = LowRemainingBalanceRule()
    result = await rule.validate(
        context(
            TRANSACTION, balance, operation="withdraw", account_id=ACCOUNT, amount=Decimal(amount)
        )
    )
    assert result.ok
    assert bool(result.warnings) is warns
    if warns:
        assert "less than 1% of its balance of 100.00" in result.warnings[0]


async def test_deposits_and_unknown_accounts_never_warn() -> None:
    rule = LowRemainingBalanceRule()
    deposit = context(
        TRANSACTION, "100", operation="deposit", account_id=ACCOUNT, amount=Decimal("99.5")
    )
    assert (await rule.validate(deposit)).warnings == []
    unknown = context(
        TRANSACTION, None, operation="withdraw", account_id=ACCOUNT, amount=Decimal("1")
    )
    assert (await rule.validate(unknown)).warnings == []


async def test_an_outgoing_transfer_leaving_less_than_one_percent_warns() -> None:
    rule = LowRemainingBalanceRule()
    result = await rule.validate(
        context(
            TRANSFER, "50.00", from_account_id=ACCOUNT, to_account_id=OTHER, amount=Decimal("50")
        )
    )
    assert len(result.warnings) == 1


class TwoProblems:
    name = "two_problems"

    async def validate(self, request: RequestContext) -> ValidationResult:
        return ValidationResult(
            errors=[FieldError("a", "is bad"), FieldError("b", "is worse")], warnings=["hm"]
        )


class OneProblem:
    name = "one_problem"

    async def validate(self, request: RequestContext) -> ValidationResult:
        return ValidationResult.error("account_id", "is not ours")


async def test_the_validator_merges_every_rule_and_counts_failures_by_rule() -> None:
    failures: list[str] = []
    warnings: list[str] = []
    validator = default_validator(on_failure=failures.append, on_warning=warnings.append)
    validator.register(TRANSACTION, OneProblem())
    validator.register(TRANSACTION, TwoProblems())
    result = await validator.validate(
        context(TRANSACTION, "10", operation="withdraw", account_id=ACCOUNT, amount=Decimal(1))
    )
    assert [e.field for e in result.errors] == ["account_id", "a", "b"]
    assert result.warnings == ["hm"]
    assert failures == ["one_problem", "two_problems"]
    assert warnings == ["two_problems"]


def test_the_built_in_rules_are_policies_only() -> None:
    """Types, formats and ranges are the schema's, rules of money the domain's."""
    validator = default_validator()
    assert [type(r).__name__ for r in validator.rules(TRANSACTION)] == ["LowRemainingBalanceRule"]
    assert [type(r).__name__ for r in validator.rules(TRANSFER)] == ["LowRemainingBalanceRule"]


async def test_a_kind_without_rules_passes() -> None:
    assert (await RequestValidator().validate(context("something_else"))).ok
