"""The Account aggregate: its rules, its events and its state (check, emit, apply)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from banking_es.domain import errors
from banking_es.domain.account import CLOSED, MAX_OWNER_NAME, OPEN, Account
from banking_es.domain.events import (
    EVENT_TYPES,
    AccountClosed,
    AccountCreated,
    DomainEvent,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferSent,
    event_from_stored,
)
from banking_es.domain.hold import Hold

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MAX = Decimal("999999999999999.99")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def opened(
    balance: str = "100.00",
    currency: str = "USD",
    account_id: str = "acc-1",
    owner: str = "Ada",
) -> Account:
    account = Account(account_id)
    account.apply(Account.open(account_id, owner, Decimal(balance), currency, "user-1"), at(0))
    return account


def closed(account_id: str = "acc-closed") -> Account:
    account = opened("0.00", account_id=account_id)
    account.apply(account.close("done"), at(1))
    return account


def state_of(account: Account) -> dict[str, Any]:
    return account.to_snapshot()


# ---- open ----------------------------------------------------------------------------------------


def test_open_returns_an_account_created_event_with_exact_money() -> None:
    event = Account.open("acc-1", "Ada Lovelace", Decimal("12.5"), "EUR", "user-7")
    assert event == AccountCreated("acc-1", "Ada Lovelace", Decimal("12.50"), "EUR", "user-7")
    assert str(event.initial_balance) == "12.50"


def test_open_trims_the_owner_name() -> None:
    event = Account.open("acc-1", "  \tAda  \n", Decimal("0"), "USD")
    assert event.owner_name == "Ada"
    assert event.owner_id is None


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_open_requires_an_owner_name(name: str) -> None:
    with pytest.raises(errors.InvalidAccountData, match="owner_name is required"):
        Account.open("acc-1", name, Decimal("0"), "USD")


def test_open_accepts_an_owner_name_of_exactly_200_characters() -> None:
    name = "x" * MAX_OWNER_NAME
    assert Account.open("acc-1", f"  {name}  ", Decimal("0"), "USD").owner_name == name


def test_open_rejects_an_owner_name_over_200_characters() -> None:
    with pytest.raises(errors.InvalidAccountData, match="at most 200"):
        Account.open("acc-1", "x" * 201, Decimal("0"), "USD")


@pytest.mark.parametrize("currency", ["usd", "US", "USDD", "", "U$D", "12A", "Usd"])
def test_open_rejects_a_currency_that_is_not_an_iso_code(currency: str) -> None:
    with pytest.raises(errors.InvalidAccountData, match="ISO 4217"):
        Account.open("acc-1", "Ada", Decimal("0"), currency)


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY", "CHF"])
def test_open_accepts_three_uppercase_letters(currency: str) -> None:
    assert Account.open("acc-1", "Ada", Decimal("0"), currency).currency == currency


@pytest.mark.parametrize("currency", ["ÄÖÜ", "ΑΒΓ"])
def test_open_rejects_non_ascii_letters_as_currency(currency: str) -> None:
    with pytest.raises(errors.InvalidAccountData):
        Account.open("acc-1", "Ada", Decimal("0"), currency)


@pytest.mark.parametrize("balance", ["-0.01", "-100"])
def test_open_rejects_a_negative_initial_balance(balance: str) -> None:
    with pytest.raises(errors.InvalidAmount, match="non-negative"):
        Account.open("acc-1", "Ada", Decimal(balance), "USD")


def test_open_accepts_a_zero_initial_balance() -> None:
    assert Account.open("acc-1", "Ada", Decimal("0"), "USD").initial_balance == Decimal("0.00")


@pytest.mark.parametrize("balance", ["0.001", "1000000000000000", "NaN"])
def test_open_applies_the_money_rules_to_the_initial_balance(balance: str) -> None:
    with pytest.raises(errors.InvalidAmount):
        Account.open("acc-1", "Ada", Decimal(balance), "USD")


def test_open_accepts_the_largest_initial_balance() -> None:
    assert Account.open("acc-1", "Ada", MAX, "USD").initial_balance == MAX


# ---- deposit and withdraw ------------------------------------------------------------------------


def test_deposit_returns_money_deposited() -> None:
    event = opened().deposit(Decimal("25.5"), "salary")
    assert event == MoneyDeposited(Decimal("25.50"), "salary")


@pytest.mark.parametrize("amount", ["0", "-1", "0.00", "0.001"])
def test_deposit_requires_a_positive_amount_of_money(amount: str) -> None:
    with pytest.raises(errors.InvalidAmount):
        opened().deposit(Decimal(amount))


def test_deposit_up_to_the_balance_limit_is_accepted() -> None:
    account = opened("999999999999999.00")
    assert account.deposit(Decimal("0.99")).amount == Decimal("0.99")


def test_deposit_beyond_the_balance_limit_is_rejected() -> None:
    account = opened("999999999999999.00")
    with pytest.raises(errors.BalanceLimitExceeded, match="15 integer digits"):
        account.deposit(Decimal("1.00"))


def test_withdraw_returns_money_withdrawn() -> None:
    assert opened("100").withdraw(Decimal("40"), "rent") == MoneyWithdrawn(Decimal("40.00"), "rent")


def test_withdraw_of_the_whole_balance_is_accepted() -> None:
    assert opened("100").withdraw(Decimal("100.00")).amount == Decimal("100.00")


def test_withdraw_rejects_more_than_the_balance() -> None:
    with pytest.raises(errors.InsufficientFunds) as info:
        opened("100").withdraw(Decimal("100.01"))
    assert info.value.account_id == "acc-1"
    assert info.value.balance == Decimal("100.00")
    assert info.value.amount == Decimal("100.01")
    assert info.value.code == "insufficient_funds"
    assert str(info.value) == "insufficient funds: balance 100.00 is less than the amount 100.01"


@pytest.mark.parametrize("amount", ["0", "-5", "1.234"])
def test_withdraw_requires_a_positive_amount_of_money(amount: str) -> None:
    with pytest.raises(errors.InvalidAmount):
        opened().withdraw(Decimal(amount))


def test_deposit_rejects_a_description_over_500_characters() -> None:
    with pytest.raises(errors.DomainError):
        opened().deposit(Decimal("1"), "d" * 501)


# ---- closed accounts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        lambda a: a.deposit(Decimal("1")),
        lambda a: a.withdraw(Decimal("1")),
        lambda a: a.close("again"),
        lambda a: a.send_transfer("t-1", opened(account_id="acc-other"), Decimal("1")),
        lambda a: opened(account_id="acc-other").send_transfer("t-1", a, Decimal("1")),
    ],
    ids=["deposit", "withdraw", "close", "transfer-from", "transfer-to"],
)
def test_a_closed_account_rejects_every_write(write: Any) -> None:
    account = closed()
    with pytest.raises(errors.AccountClosed) as info:
        write(account)
    assert info.value.account_id == "acc-closed"
    assert info.value.code == "account_closed"


def test_close_at_zero_returns_account_closed() -> None:
    assert opened("0").close("moving abroad") == AccountClosed("moving abroad")


def test_close_rejects_an_account_that_holds_money() -> None:
    with pytest.raises(errors.BalanceNotZero) as info:
        opened("0.01").close("bye")
    assert info.value.balance == Decimal("0.01")
    assert info.value.code == "balance_not_zero"


# ---- transfers -----------------------------------------------------------------------------------


def test_send_transfer_returns_both_events() -> None:
    source, target = opened("50", account_id="a"), opened("5", account_id="b")
    sent, received = source.send_transfer("t-1", target, Decimal("20.1"), "rent")
    assert sent == TransferSent("t-1", "b", Decimal("20.10"), "rent")
    assert received == TransferReceived("t-1", "a", Decimal("20.10"), "rent")


def test_send_transfer_rejects_the_same_account() -> None:
    account = opened()
    with pytest.raises(errors.SameAccount):
        account.send_transfer("t-1", account.copy(), Decimal("1"))


def test_send_transfer_rejects_a_currency_mismatch() -> None:
    source, target = opened(account_id="a"), opened(currency="EUR", account_id="b")
    with pytest.raises(errors.CurrencyMismatch, match=r"USD.*EUR"):
        source.send_transfer("t-1", target, Decimal("1"))


def test_send_transfer_rejects_more_than_the_source_balance() -> None:
    source, target = opened("10", account_id="a"), opened("0", account_id="b")
    with pytest.raises(errors.InsufficientFunds) as info:
        source.send_transfer("t-1", target, Decimal("10.01"))
    assert info.value.account_id == "a"


def test_send_transfer_of_the_whole_balance_is_accepted() -> None:
    source, target = opened("10", account_id="a"), opened("0", account_id="b")
    sent, _ = source.send_transfer("t-1", target, Decimal("10"))
    assert sent.amount == Decimal("10.00")


def test_send_transfer_rejects_a_target_balance_beyond_the_limit() -> None:
    source, target = opened("10", account_id="a"), opened(str(MAX), account_id="b")
    with pytest.raises(errors.BalanceLimitExceeded):
        source.send_transfer("t-1", target, Decimal("0.01"))


@pytest.mark.parametrize("amount", ["0", "-1", "0.001"])
def test_send_transfer_requires_a_positive_amount_of_money(amount: str) -> None:
    source, target = opened(account_id="a"), opened(account_id="b")
    with pytest.raises(errors.InvalidAmount):
        source.send_transfer("t-1", target, Decimal(amount))


# ---- commands do not mutate ----------------------------------------------------------------------


def test_command_methods_never_change_the_state() -> None:
    source, target = opened("100", account_id="a"), opened("0", account_id="b")
    before = (state_of(source), state_of(target))
    source.deposit(Decimal("1"))
    source.withdraw(Decimal("1"))
    target.close("bye")
    source.send_transfer("t-1", target, Decimal("5"))
    for rejected in (
        lambda: source.withdraw(Decimal("1000")),
        lambda: source.close("not at zero"),
    ):
        with pytest.raises(errors.DomainError):
            rejected()
    assert (state_of(source), state_of(target)) == before


# ---- apply and replay ----------------------------------------------------------------------------


def test_apply_folds_each_event_and_increments_the_version() -> None:
    account = Account("acc-1")
    assert not account.exists
    account.apply(AccountCreated("acc-1", "Ada", Decimal("10.00"), "EUR", "user-1"), at(1))
    assert (account.version, account.balance, account.currency) == (1, Decimal("10.00"), "EUR")
    assert account.exists
    assert account.is_open
    assert account.created_at == at(1) == account.updated_at
    account.apply(MoneyDeposited(Decimal("5.25")), at(2))
    account.apply(MoneyWithdrawn(Decimal("3.00")), at(3))
    account.apply(TransferReceived("t-1", "other", Decimal("0.75")), at(4))
    account.apply(TransferSent("t-2", "other", Decimal("13.00")), at(5))
    assert (account.version, account.balance) == (5, Decimal("0.00"))
    account.apply(AccountClosed("bye"), at(6))
    assert (account.version, account.status, account.closed_reason) == (6, CLOSED, "bye")
    assert account.created_at == at(1)
    assert account.updated_at == at(6)
    assert not account.is_open


def test_apply_never_checks_a_rule() -> None:
    account = opened("1.00")
    account.apply(MoneyWithdrawn(Decimal("5.00")))  # history is the truth, even an overdraft
    assert account.balance == Decimal("-4.00")
    assert account.version == 2


def test_apply_rejects_an_unknown_event_without_changing_the_version() -> None:
    account = opened()
    with pytest.raises(ValueError, match="cannot apply DomainEvent"):
        account.apply(DomainEvent())
    assert account.version == 1


def test_replay_reproduces_the_state_built_by_commands() -> None:
    live = Account("acc-1")
    history: list[tuple[DomainEvent, datetime | None]] = []

    def record(event: DomainEvent, moment: datetime) -> None:
        live.apply(event, moment)
        history.append((event, moment))

    record(Account.open("acc-1", "Ada", Decimal("10"), "USD", "u-1"), at(1))
    record(live.deposit(Decimal("90.55"), "pay"), at(2))
    record(live.withdraw(Decimal("0.55")), at(3))
    record(live.withdraw(Decimal("100")), at(4))
    record(live.close("bye"), at(5))

    replayed = Account.replay("acc-1", history)
    assert replayed == live
    assert state_of(replayed) == {
        "id": "acc-1",
        "owner_name": "Ada",
        "owner_id": "u-1",
        "balance": "0.00",
        "currency": "USD",
        "status": CLOSED,
        "version": 5,
        "created_at": at(1).isoformat(),
        "updated_at": at(5).isoformat(),
        "closed_reason": "bye",
    }


def test_replay_of_nothing_is_an_account_that_does_not_exist() -> None:
    account = Account.replay("acc-1", [])
    assert (account.exists, account.version, account.balance) == (False, 0, Decimal("0.00"))


def test_fold_goes_on_from_the_state_it_is_given() -> None:
    # A snapshot or a cached copy plus the events after it: as a replay of them all.
    events: list[tuple[DomainEvent, datetime | None]] = [
        (AccountCreated("acc-1", "Ada", Decimal("10.00"), "USD", "u-1"), at(1)),
        (MoneyDeposited(Decimal("5.00")), at(2)),
        (MoneyWithdrawn(Decimal("1.50")), at(3)),
    ]
    start = Account.from_snapshot(Account.replay("acc-1", events[:1]).to_snapshot())
    folded = start.fold(events[1:])
    assert folded is start
    assert folded == Account.replay("acc-1", events)
    assert (folded.version, folded.balance, folded.updated_at) == (3, Decimal("13.50"), at(3))


def test_copy_is_independent() -> None:
    account = opened()
    twin = account.copy()
    twin.apply(MoneyDeposited(Decimal("1.00")))
    assert (account.version, account.balance) == (1, Decimal("100.00"))
    assert (twin.version, twin.balance) == (2, Decimal("101.00"))


# ---- snapshots -----------------------------------------------------------------------------------


def test_snapshot_round_trip_keeps_every_field() -> None:
    account = opened("12.30")
    account.apply(MoneyDeposited(Decimal("0.70")), at(9))
    account.apply(MoneyWithdrawn(Decimal("13.00")), at(10))
    account.apply(AccountClosed("gone"), at(11))
    state = account.to_snapshot()
    assert state["balance"] == "0.00"
    assert state["version"] == 4
    assert Account.from_snapshot(state) == account


def test_snapshot_of_an_open_account_without_times_round_trips() -> None:
    account = Account("acc-9", owner_name="Bo", balance=Decimal("3.10"), version=2)
    state = account.to_snapshot()
    assert state["created_at"] is None
    assert state["updated_at"] is None
    restored = Account.from_snapshot(state)
    assert restored == account
    assert restored.status == OPEN
    assert str(restored.balance) == "3.10"


# ---- events: wire data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (
            AccountCreated("acc-1", "Ada", Decimal("1500"), "USD", "user-1"),
            {
                "account_id": "acc-1",
                "owner_name": "Ada",
                "initial_balance": "1500.00",
                "currency": "USD",
                "owner_id": "user-1",
            },
        ),
        (
            AccountCreated("acc-1", "Ada", Decimal("0.5"), "USD"),
            {
                "account_id": "acc-1",
                "owner_name": "Ada",
                "initial_balance": "0.50",
                "currency": "USD",
                "owner_id": None,
            },
        ),
        (MoneyDeposited(Decimal("10.1"), "pay"), {"amount": "10.10", "description": "pay"}),
        (MoneyDeposited(Decimal("7")), {"amount": "7.00", "description": None}),
        (MoneyWithdrawn(Decimal("0.01"), None), {"amount": "0.01", "description": None}),
        (AccountClosed("bye"), {"reason": "bye"}),
        (
            TransferSent("t-1", "acc-2", Decimal("3"), "rent"),
            {
                "transfer_id": "t-1",
                "to_account_id": "acc-2",
                "amount": "3.00",
                "description": "rent",
            },
        ),
        (
            TransferReceived("t-1", "acc-1", Decimal("3.5")),
            {
                "transfer_id": "t-1",
                "from_account_id": "acc-1",
                "amount": "3.50",
                "description": None,
            },
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, DomainEvent) else "",
)
def test_event_data_has_two_decimal_strings_and_round_trips(
    event: DomainEvent, data: dict[str, Any]
) -> None:
    assert event.to_data() == data
    rebuilt = event_from_stored(event.type, data)
    assert rebuilt == event
    assert type(rebuilt) is type(event)


def test_event_types_are_the_documented_names() -> None:
    assert set(EVENT_TYPES) == {
        "AccountCreated",
        "MoneyDeposited",
        "MoneyWithdrawn",
        "AccountClosed",
        "TransferSent",
        "TransferReceived",
        "HoldPlaced",
        "HoldCaptured",
        "HoldVoided",
        "HoldExpired",
        "OverdraftLimitSet",
        "AccountFrozen",
        "AccountUnfrozen",
    }
    assert all(cls.type == name for name, cls in EVENT_TYPES.items())


def test_event_from_stored_rejects_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown event type 'MoneyPrinted'"):
        event_from_stored("MoneyPrinted", {})


def test_account_closed_without_a_reason_reads_as_empty_reason() -> None:
    assert AccountClosed.from_data({}) == AccountClosed("")
    assert AccountClosed.from_data({"reason": None}) == AccountClosed("")


def test_events_are_immutable() -> None:
    event = MoneyDeposited(Decimal("1.00"))
    with pytest.raises(AttributeError):
        event.amount = Decimal("2.00")  # type: ignore[misc]


def test_copy_carries_every_field_and_shares_no_state() -> None:
    values: dict[str, Any] = {
        "id": "acc-1",
        "owner_name": "Ada",
        "owner_id": "user-1",
        "balance": Decimal("12.34"),
        "currency": "EUR",
        "status": CLOSED,
        "version": 7,
        "created_at": datetime(2026, 1, 2, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 3, tzinfo=UTC),
        "closed_reason": "moved",
        "overdraft_limit": Decimal("50.00"),
        "holds": {"h-1": Hold("h-1", Decimal("1.00"), None, T0, "card")},
        "carried_debt": Decimal("-3.00"),
    }
    # A new field must be added here (and to `Account.copy`, which lists every field).
    assert [f.name for f in dataclasses.fields(Account)] == list(values)
    original = Account(**values)
    copied = original.copy()
    assert copied is not original
    assert {f.name: getattr(copied, f.name) for f in dataclasses.fields(Account)} == values
    copied.version += 1
    assert original.version == 7
    copied.holds.clear()
    assert original.holds == values["holds"]
