"""Holds, overdraft limits and freezes on the Account aggregate (issue 25, items 2-4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banking_es.domain import errors, holds
from banking_es.domain.account import FROZEN, OPEN, Account, lowest_allowed_balance
from banking_es.domain.events import (
    AccountFrozen,
    AccountUnfrozen,
    DomainEvent,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldVoided,
    OverdraftLimitSet,
    TransferReceived,
    customer_data,
    event_from_stored,
)
from banking_es.domain.holds import DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN, MAX_PENDING_HOLDS

T0 = datetime(2030, 1, 1, tzinfo=UTC)
D = Decimal


def later(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def opened(balance: str = "100.00", account_id: str = "a", currency: str = "USD") -> Account:
    account = Account(account_id)
    account.apply(Account.open(account_id, "Ada", D(balance), currency, "u1"), T0)
    return account


def applied(account: Account, *events: DomainEvent | None) -> Account:
    for event in events:
        assert event is not None
        account.apply(event, T0)
    return account


def held(account: Account, hold_id: str, amount: str, **kw: object) -> Account:
    return applied(account, holds.place(account, hold_id, D(amount), T0, **kw))  # type: ignore[arg-type]


# ---- events ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (
            HoldPlaced("h", D("1.50"), "b", later(60), "card"),
            {
                "hold_id": "h",
                "amount": "1.50",
                "to_account_id": "b",
                "expires_at": "2030-01-01T00:01:00+00:00",
                "description": "card",
            },
        ),
        (
            HoldCaptured("h", D("1.00"), D("0.50")),
            {"hold_id": "h", "amount": "1.00", "released": "0.50"},
        ),
        (HoldVoided("h", D("1.50")), {"hold_id": "h", "amount": "1.50"}),
        (HoldExpired("h", D("1.50")), {"hold_id": "h", "amount": "1.50"}),
        (OverdraftLimitSet(D("200.00"), "admin-1"), {"limit": "200.00", "set_by": "admin-1"}),
        (AccountFrozen("kyc", "admin-1"), {"reason": "kyc", "by": "admin-1"}),
        (AccountUnfrozen("admin-1"), {"by": "admin-1"}),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, DomainEvent) else "",
)
def test_new_events_have_the_documented_data_and_round_trip(
    event: DomainEvent, data: dict[str, object]
) -> None:
    assert event.to_data() == data
    assert event_from_stored(event.type, data) == event


# ---- holds -------------------------------------------------------------------------------


def test_a_hold_reduces_available_not_the_balance() -> None:
    account = held(opened(), "h", "30")
    assert account.balance == D("100.00")
    assert account.available(T0) == D("70.00")
    assert account.holds["h"].expires_at == later(DEFAULT_EXPIRES_IN)


def test_a_hold_beyond_available_is_insufficient_funds() -> None:
    account = held(opened(), "h", "60")
    with pytest.raises(errors.InsufficientFunds):
        holds.place(account, "h2", D("40.01"), T0)
    with pytest.raises(errors.InsufficientFunds):
        account.withdraw(D("40.01"), now=T0)
    assert account.withdraw(D("40.00"), now=T0).amount == D("40.00")


@pytest.mark.parametrize("expires_in", [0, -1, MAX_EXPIRES_IN + 1, True, 1.5])
def test_expires_in_is_one_second_to_thirty_days(expires_in: object) -> None:
    with pytest.raises(errors.InvalidAccountData, match="expires_in"):
        holds.place(opened(), "h", D("1"), T0, expires_in=expires_in)  # type: ignore[arg-type]


def test_a_hold_past_its_expiry_no_longer_counts_nor_captures() -> None:
    account = held(opened(), "h", "100", expires_in=60)
    assert account.available(later(59)) == D("0.00")
    assert account.available(later(60)) == D("100.00")
    with pytest.raises(errors.HoldNotPending):
        holds.capture(account, "h", later(60))
    with pytest.raises(errors.HoldNotPending):
        holds.void(account, "h", later(61))
    assert account.withdraw(D("100"), now=later(60)).amount == D("100.00")


def test_expiry_only_when_due_and_only_once() -> None:
    account = held(opened(), "h", "10", expires_in=60)
    with pytest.raises(errors.HoldNotDue):
        holds.expire(account, "h", later(59))
    event = holds.expire(account, "h", later(60))
    assert event == HoldExpired("h", D("10.00"))
    applied(account, event)
    assert account.holds == {}
    with pytest.raises(errors.HoldNotPending):
        holds.expire(account, "h", later(61))


def test_full_capture_debits_the_held_amount() -> None:
    account = held(opened(), "h", "30")
    captured, received = holds.capture(account, "h", T0)
    assert (captured, received) == (HoldCaptured("h", D("30.00"), D("0.00")), None)
    applied(account, captured)
    assert (account.balance, account.available(T0)) == (D("70.00"), D("70.00"))


def test_partial_capture_releases_the_rest() -> None:
    account = held(opened(), "h", "30")
    captured, _ = holds.capture(account, "h", T0, D("12.5"))
    assert captured == HoldCaptured("h", D("12.50"), D("17.50"))
    applied(account, captured)
    assert (account.balance, account.available(T0)) == (D("87.50"), D("87.50"))


def test_a_capture_never_exceeds_the_hold() -> None:
    account = held(opened(), "h", "30")
    with pytest.raises(errors.AmountExceedsHold):
        holds.capture(account, "h", T0, D("30.01"))


def test_a_hold_is_settled_at_most_once() -> None:
    for settle in (
        lambda a: holds.capture(a, "h", T0)[0],
        lambda a: holds.void(a, "h", T0),
    ):
        account = held(opened(), "h", "30")
        applied(account, settle(account))
        with pytest.raises(errors.HoldNotPending):
            holds.capture(account, "h", T0)
        with pytest.raises(errors.HoldNotPending):
            holds.void(account, "h", T0)
        with pytest.raises(errors.HoldNotPending):
            holds.expire(account, "h", later(DEFAULT_EXPIRES_IN))


def test_capture_to_a_destination_credits_it_with_the_hold_id() -> None:
    source, target = held(opened(), "h", "30", target=opened("0", "b")), opened("0", "b")
    captured, received = holds.capture(source, "h", T0, D("10"), target)
    assert received == TransferReceived("h", "a", D("10.00"), None)
    applied(source, captured)
    applied(target, received)
    assert source.balance + target.balance == D("100.00")


def test_the_destination_is_checked_at_placement_and_capture() -> None:
    with pytest.raises(errors.CurrencyMismatch):
        holds.place(opened(), "h", D("1"), T0, target=opened("0", "b", "EUR"))
    shut = applied(opened("0", "b"), opened("0", "b").close("gone"))
    with pytest.raises(errors.AccountClosed):
        holds.place(opened(), "h", D("1"), T0, target=shut)
    with pytest.raises(errors.SameAccount):
        holds.place(opened(), "h", D("1"), T0, target=opened())
    source = held(opened(), "h", "30", target=opened("0", "b"))
    with pytest.raises(errors.AccountClosed):
        holds.capture(source, "h", T0, target=shut)
    frozen = applied(opened("0", "b"), opened("0", "b").freeze("aml", "x"))
    _, received = holds.capture(source, "h", T0, target=frozen)
    assert received is not None


def test_at_most_a_thousand_pending_holds() -> None:
    account = opened("100000")
    for n in range(MAX_PENDING_HOLDS):
        applied(account, holds.place(account, f"h{n}", D("1"), T0, expires_in=60 + n))
    with pytest.raises(errors.TooManyHolds):
        holds.place(account, "one-more", D("1"), T0)
    # Those past their expiry no longer count against the limit.
    assert holds.place(account, "one-more", D("1"), later(61)).hold_id == "one-more"


def test_closing_with_pending_holds_is_refused() -> None:
    account = opened("0.00")
    account.apply(OverdraftLimitSet(D("10"), "x"), T0)
    held(account, "h", "5", expires_in=60)
    with pytest.raises(errors.HoldsPending):
        account.close("done", now=T0)
    assert account.close("done", now=later(60)).reason == "done"


# ---- overdraft ---------------------------------------------------------------------------


def test_the_overdraft_limit_lets_debits_go_below_zero_and_no_further() -> None:
    account = applied(opened("10"), opened().set_overdraft_limit(D("50"), "admin"))
    assert account.available(T0) == D("60.00")
    with pytest.raises(errors.InsufficientFunds):
        account.withdraw(D("60.01"), now=T0)
    applied(account, account.withdraw(D("60"), now=T0))
    assert account.balance == D("-50.00")
    assert lowest_allowed_balance(account) == D("-50.00")


def test_lowering_the_limit_below_the_debt_only_blocks_further_debits() -> None:
    account = applied(opened("0"), OverdraftLimitSet(D("50"), "admin"))
    applied(account, account.withdraw(D("40"), now=T0))
    applied(account, account.set_overdraft_limit(D("10"), "admin"))
    assert account.balance == D("-40.00")
    assert account.available(T0) == D("-30.00")
    assert lowest_allowed_balance(account) == D("-40.00")  # the debt it carries stays allowed
    with pytest.raises(errors.InsufficientFunds):
        account.withdraw(D("0.01"), now=T0)
    applied(account, account.deposit(D("35")))
    assert lowest_allowed_balance(account) == D("-10.00")
    assert account.withdraw(D("5"), now=T0).amount == D("5.00")


def test_setting_the_same_limit_emits_nothing_and_negative_is_refused() -> None:
    account = opened()
    assert account.set_overdraft_limit(D("0"), "admin") is None
    with pytest.raises(errors.InvalidAmount):
        account.set_overdraft_limit(D("-1"), "admin")
    shut = applied(opened("0"), opened("0").close("gone"))
    with pytest.raises(errors.AccountClosed):
        shut.set_overdraft_limit(D("5"), "admin")


# ---- freezes -----------------------------------------------------------------------------


def test_a_frozen_account_refuses_debits_and_receives_credits() -> None:
    account = held(opened(), "h", "10")
    applied(account, account.freeze(" sanctions ", "admin-1"))
    assert account.status == FROZEN
    for debit in (
        lambda: account.withdraw(D("1"), now=T0),
        lambda: holds.place(account, "h2", D("1"), T0),
        lambda: holds.capture(account, "h", T0),
        lambda: account.send_transfer("t", opened("0", "b"), D("1"), now=T0),
        lambda: account.close("x", now=T0),
    ):
        with pytest.raises(errors.AccountFrozen):
            debit()
    assert account.deposit(D("1")).amount == D("1.00")
    received = opened("5", "b").send_transfer("t", account, D("5"), now=T0)[1]
    assert received.amount == D("5.00")
    assert holds.void(account, "h", T0) == HoldVoided("h", D("10.00"))


def test_freeze_twice_emits_nothing_and_unfreeze_reopens() -> None:
    account = opened()
    event = account.freeze("kyc", "admin-1")
    assert event == AccountFrozen("kyc", "admin-1")
    applied(account, event)
    assert account.freeze("again", "admin-2") is None
    assert opened().unfreeze("admin") is None
    applied(account, account.unfreeze("admin-1"))
    assert account.status == OPEN
    with pytest.raises(errors.InvalidAccountData):
        account.freeze("  ", "admin")


def test_freezing_a_closed_account_is_account_closed() -> None:
    shut = applied(opened("0"), opened("0").close("gone"))
    with pytest.raises(errors.AccountClosed):
        shut.freeze("kyc", "admin")
    with pytest.raises(errors.AccountClosed):
        shut.unfreeze("admin")


def test_the_snapshot_carries_holds_limit_and_status() -> None:
    account = held(
        applied(opened(), OverdraftLimitSet(D("5"), "x")), "h", "3", target=opened("0", "b")
    )
    applied(account, account.freeze("kyc", "x"))
    assert Account.from_snapshot(account.to_snapshot()) == account
    assert "holds" not in opened().to_snapshot()


# ---- properties --------------------------------------------------------------------------

_AMOUNTS = st.decimals(min_value=D("0.01"), max_value=D("500"), places=2)
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["withdraw", "hold", "capture", "void", "deposit", "transfer", "expire"]),
        _AMOUNTS,
        st.integers(min_value=0, max_value=5),
    ),
    max_size=40,
)


def _run(ops: list[tuple[str, Decimal, int]], limit: Decimal) -> tuple[Account, Account, Decimal]:
    """Apply every allowed operation between two accounts; returns them and the net
    money that entered from outside (deposits less withdrawals)."""
    a = applied(opened("100"), OverdraftLimitSet(limit, "x"))
    b = opened("0", "b")
    outside = D("100")
    now = T0
    for n, (op, amount, pick) in enumerate(ops):
        now = later(n * 10)
        pending = list(a.holds)
        hold_id = pending[pick % len(pending)] if pending else "none"
        try:
            if op == "withdraw":
                applied(a, a.withdraw(amount, now=now))
                outside -= amount
            elif op == "deposit":
                applied(a, a.deposit(amount))
                outside += amount
            elif op == "hold":
                to = b if pick % 2 else None
                applied(
                    a, holds.place(a, f"h{n}", amount, now, target=to, expires_in=15 + pick * 10)
                )
            elif op == "capture":
                captured, received = holds.capture(a, hold_id, now, amount if pick % 3 else None, b)
                applied(a, captured)
                if received is not None:
                    applied(b, received)
                else:
                    outside -= captured.amount  # settled to the outside world
            elif op == "void":
                applied(a, holds.void(a, hold_id, now))
            elif op == "expire":
                applied(a, holds.expire(a, hold_id, now))
            else:
                applied(a, *a.send_transfer(f"t{n}", b, amount, now=now)[:1])
                applied(b, TransferReceived(f"t{n}", "a", amount.quantize(D("0.01"))))
        except errors.DomainError:
            pass
        assert a.available(now) >= 0
        assert a.balance >= lowest_allowed_balance(a) == -limit
    return a, b, outside


@settings(max_examples=200, deadline=None)
@given(_OPS, st.decimals(min_value=D("0"), max_value=D("300"), places=2))
def test_available_never_goes_below_zero_by_any_sequence_of_debits(
    ops: list[tuple[str, Decimal, int]], limit: Decimal
) -> None:
    a, _, _ = _run(ops, limit)
    # Holds past their expiry count no more, whether or not they were expired by an event.
    assert a.available(later(10 * len(ops))) >= 0


@settings(max_examples=200, deadline=None)
@given(_OPS, st.decimals(min_value=D("0"), max_value=D("300"), places=2))
def test_no_money_is_created_or_lost(ops: list[tuple[str, Decimal, int]], limit: Decimal) -> None:
    a, b, outside = _run(ops, limit)
    assert a.balance + b.balance == outside


def test_a_customer_sees_that_the_account_was_frozen_not_why_nor_by_whom() -> None:
    frozen = AccountFrozen("sanctions list", "admin-1").to_data()
    assert customer_data("AccountFrozen", frozen) == {}
    assert customer_data("AccountUnfrozen", {"by": "admin-1"}) == {}
    held_data = HoldVoided("h", D("1.00")).to_data()
    assert customer_data("HoldVoided", held_data) == held_data


def test_hold_amounts_keep_the_currency_minor_units() -> None:
    yen = opened("1000", currency="JPY")
    placed = holds.place(yen, "h", D("150"), T0)
    assert placed.to_data()["amount"] == "150"
    with pytest.raises(errors.InvalidAmount):
        holds.place(yen, "h", D("1.5"), T0)
    applied(yen, placed)
    captured, _ = holds.capture(yen, "h", T0, D("100"))
    assert captured.to_data() == {"hold_id": "h", "amount": "100", "released": "50"}
    assert event_from_stored("HoldCaptured", captured.to_data()).to_data() == captured.to_data()
    dinar = opened("10", currency="BHD")
    limit = dinar.set_overdraft_limit(D("2.5"), "admin")
    assert limit is not None
    assert limit.to_data()["limit"] == "2.500"
    applied(dinar, limit)
    assert Account.from_snapshot(dinar.to_snapshot()) == dinar
