"""Every built-in request validation rule, and how the validator merges rules."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from banking_es.application.validation import (
    ACCOUNT_CREATION,
    TRANSACTION,
    TRANSFER,
    AccountCreationRule,
    FieldError,
    LowRemainingBalanceRule,
    RequestContext,
    RequestValidator,
    TransactionRule,
    TransferRule,
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


async def test_account_creation_needs_an_owner_and_a_non_negative_balance() -> None:
    rule = AccountCreationRule()
    ok = await rule.validate(
        context(ACCOUNT_CREATION, owner_name="Ada", initial_balance=Decimal("0"))
    )
    assert ok.ok
    bad = await rule.validate(
        context(ACCOUNT_CREATION, owner_name="  ", initial_balance=Decimal("-1"))
    )
    assert bad.errors == [
        FieldError("owner_name", "is required"),
        FieldError("initial_balance", "must be non-negative"),
    ]
    missing = await rule.validate(context(ACCOUNT_CREATION))
    assert [e.field for e in missing.errors] == ["owner_name", "initial_balance"]


async def test_a_transaction_needs_a_uuid_account_and_a_positive_amount() -> None:
    rule = TransactionRule()
    assert (await rule.validate(context(TRANSACTION, account_id=ACCOUNT, amount=Decimal(1)))).ok
    bad = await rule.validate(context(TRANSACTION, account_id="nope", amount=Decimal(0)))
    assert bad.errors == [
        FieldError("account_id", "must be a UUID"),
        FieldError("amount", "must be greater than zero"),
    ]


async def test_a_transfer_needs_two_uuids_and_a_positive_amount() -> None:
    rule = TransferRule()
    good = context(TRANSFER, from_account_id=ACCOUNT, to_account_id=OTHER, amount=Decimal(1))
    assert (await rule.validate(good)).ok
    bad = await rule.validate(context(TRANSFER, from_account_id="x", amount=Decimal("-1")))
    assert [e.field for e in bad.errors] == ["from_account_id", "to_account_id", "amount"]


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


async def test_the_validator_merges_every_rule_and_counts_failures_by_rule() -> None:
    failures: list[str] = []
    warnings: list[str] = []
    validator = default_validator(on_failure=failures.append, on_warning=warnings.append)
    validator.register(TRANSACTION, TwoProblems())
    result = await validator.validate(
        context(TRANSACTION, "10", operation="withdraw", account_id="bad", amount=Decimal(0))
    )
    assert [e.field for e in result.errors] == ["account_id", "amount", "a", "b"]
    assert result.warnings == ["hm"]
    assert failures == ["transaction", "two_problems"]
    assert warnings == ["two_problems"]


async def test_a_kind_without_rules_passes() -> None:
    assert (await RequestValidator().validate(context("something_else"))).ok
