"""A hold: money reserved on its account until it is captured, voided or expires.

A pending hold lives in its account's state (`Account.holds`, by hold id) from its
`HoldPlaced` until its `HoldCaptured`, `HoldVoided` or `HoldExpired`. Past its `expires_at`
it no longer counts, whether or not its `HoldExpired` has been recorded yet. The commands
(`place`, `capture`, `void`, `expire`) check the rules and return events, as the
`Account`'s own do; `Account.apply` folds them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from banking_es.domain import errors
from banking_es.domain.events import (
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldVoided,
    TransferReceived,
)
from banking_es.domain.money import format_money, minor_units, positive_money

if TYPE_CHECKING:
    from banking_es.domain.account import Account

#: `expires_in` when a hold names none: 7 days.
DEFAULT_EXPIRES_IN = 7 * 24 * 3600
#: The longest a hold may last: 30 days.
MAX_EXPIRES_IN = 30 * 24 * 3600
#: Pending holds an account may have at once.
MAX_PENDING_HOLDS = 1000


def expiry(now: datetime, expires_in: int | None) -> datetime:
    """When a hold placed at `now` for `expires_in` seconds (default 7 days) expires."""
    seconds = DEFAULT_EXPIRES_IN if expires_in is None else expires_in
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise errors.InvalidAccountData("expires_in must be a whole number of seconds")
    if not 1 <= seconds <= MAX_EXPIRES_IN:
        raise errors.InvalidAccountData(f"expires_in must be between 1 and {MAX_EXPIRES_IN}")
    return now + timedelta(seconds=seconds)


def place(
    account: Account,
    hold_id: str,
    amount: Decimal,
    now: datetime,
    *,
    target: Account | None = None,
    expires_in: int | None = None,
    description: str | None = None,
) -> HoldPlaced:
    """Reserve `amount` on `account` (for `target`, if given) until `expires_in` seconds
    from `now`."""
    places = minor_units(account.currency)
    amount = positive_money(amount, places)
    account.check_text("description", description)
    expires_at = expiry(now, expires_in)
    account.require_debitable()
    if target is not None:
        if target.id == account.id:
            raise errors.SameAccount("a hold cannot be for its own account")
        target.require_not_closed()  # a frozen destination still receives
        account.require_same_currency(target)
    if len(account.pending_holds(now)) >= MAX_PENDING_HOLDS:
        raise errors.TooManyHolds(
            f"account {account.id} already has {MAX_PENDING_HOLDS} pending holds"
        )
    account.require_funds(amount, now)
    to_account_id = target.id if target is not None else None
    return HoldPlaced(hold_id, amount, to_account_id, expires_at, description, places)


def capture(
    account: Account,
    hold_id: str,
    now: datetime,
    amount: Decimal | None = None,
    target: Account | None = None,
) -> tuple[HoldCaptured, TransferReceived | None]:
    """Settle all (`amount` None) or part of a pending hold; the rest is released. A hold
    for another account needs that account's state (`target`), which receives the money."""
    hold = account.pending_hold(hold_id, now)
    places = minor_units(account.currency)
    taken = hold.amount if amount is None else positive_money(amount, places)
    if taken > hold.amount:
        raise errors.AmountExceedsHold(
            f"cannot capture {format_money(taken, places)} of a hold of"
            f" {format_money(hold.amount, places)}"
        )
    account.require_debitable()
    # The hold's own reservation pays for it; beyond that, available must cover it (an
    # overdraft limit lowered since the hold was placed can refuse a capture).
    if taken > account.available(now) + hold.amount:
        raise errors.InsufficientFunds(account.id, account.available(now) + hold.amount, taken)
    captured = HoldCaptured(hold_id, taken, hold.amount - taken, places)
    if hold.to_account_id is None:
        return captured, None
    if target is None or target.id != hold.to_account_id:
        raise ValueError(f"capturing hold {hold_id} needs account {hold.to_account_id}")
    target.require_not_closed()  # a frozen destination still receives
    target.require_within_limit(taken)
    return captured, TransferReceived(hold_id, account.id, taken, hold.description, places)


def void(account: Account, hold_id: str, now: datetime) -> HoldVoided:
    """Release a pending hold whole (allowed while frozen: it takes nothing out)."""
    amount = account.pending_hold(hold_id, now).amount
    return HoldVoided(hold_id, amount, minor_units(account.currency))


def expire(account: Account, hold_id: str, now: datetime) -> HoldExpired:
    """Record that a hold reached its expiry (whatever the account's status: nothing moves)."""
    hold = account.holds.get(hold_id)
    if hold is None:
        raise errors.HoldNotPending(hold_id)
    if hold.live(now):
        raise errors.HoldNotDue(hold_id)
    return HoldExpired(hold_id, hold.amount, minor_units(account.currency))
