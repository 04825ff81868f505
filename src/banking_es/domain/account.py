"""The Account aggregate: check, then emit, then apply.

Command methods check the rules and return the new events without changing state;
`apply` is the only mutation, and replaying events never re-checks a rule. Every debit
(withdrawal, hold, capture, outgoing transfer) is checked against `available(now)`: the
balance less the live pending holds plus the overdraft limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from banking_es.domain import errors
from banking_es.domain.events import (
    AccountClosed,
    AccountCreated,
    AccountFrozen,
    AccountUnfrozen,
    DomainEvent,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldVoided,
    MoneyDeposited,
    MoneyWithdrawn,
    OverdraftLimitSet,
    TransferReceived,
    TransferSent,
)
from banking_es.domain.hold import Hold
from banking_es.domain.money import (
    LIMIT,
    ZERO,
    format_money,
    is_currency,
    minor_units,
    positive_money,
    to_money,
)

OPEN = "open"
CLOSED = "closed"
FROZEN = "frozen"
MAX_OWNER_NAME = 200
MAX_DESCRIPTION = 500


@dataclass(slots=True)
class Account:
    """The state of one account, folded from its events. `version` = events applied."""

    id: str
    owner_name: str = ""
    owner_id: str | None = None
    balance: Decimal = ZERO
    currency: str = "USD"
    status: str = OPEN
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_reason: str | None = field(default=None)
    overdraft_limit: Decimal = ZERO
    #: Pending holds by id, from `HoldPlaced` until captured, voided or expired.
    holds: dict[str, Hold] = field(default_factory=dict)
    #: A debt beyond the overdraft limit that the account carried when the limit was lowered
    #: under it (a negative balance, else zero): allowed until a credit pays it or a debit.
    carried_debt: Decimal = ZERO

    # ---- commands: check and emit -------------------------------------------------

    @staticmethod
    def open(
        account_id: str,
        owner_name: str,
        initial_balance: Decimal,
        currency: str,
        owner_id: str | None = None,
    ) -> AccountCreated:
        name = owner_name.strip()
        if not name:
            raise errors.InvalidAccountData("owner_name is required")
        if len(name) > MAX_OWNER_NAME:
            raise errors.InvalidAccountData(f"owner_name must be at most {MAX_OWNER_NAME} chars")
        if not is_currency(currency):
            raise errors.InvalidAccountData(
                "currency must be an active ISO 4217 currency code such as USD"
            )
        balance = to_money(initial_balance, minor_units(currency), "initial_balance")
        if balance < ZERO:
            raise errors.InvalidAmount("initial_balance must be non-negative", "initial_balance")
        return AccountCreated(account_id, name, balance, currency, owner_id)

    def deposit(self, amount: Decimal, description: str | None = None) -> MoneyDeposited:
        places = minor_units(self.currency)
        amount = positive_money(amount, places)
        self.check_text("description", description)
        self.require_not_closed()  # a frozen account still receives
        self.require_within_limit(amount)
        return MoneyDeposited(amount, description, places)

    def withdraw(
        self, amount: Decimal, description: str | None = None, now: datetime | None = None
    ) -> MoneyWithdrawn:
        places = minor_units(self.currency)
        amount = positive_money(amount, places)
        self.check_text("description", description)
        self.require_debitable()
        self.require_funds(amount, now)
        return MoneyWithdrawn(amount, description, places)

    def close(self, reason: str, now: datetime | None = None) -> AccountClosed:
        self.check_text("reason", reason)
        self.require_debitable()
        if self.balance != ZERO:
            raise errors.BalanceNotZero(self.id, self.balance)
        if self.pending_holds(now):
            raise errors.HoldsPending(
                f"account {self.id} has pending holds; capture or void them first"
            )
        return AccountClosed(reason)

    def send_transfer(
        self,
        transfer_id: str,
        target: Account,
        amount: Decimal,
        description: str | None = None,
        now: datetime | None = None,
    ) -> tuple[TransferSent, TransferReceived]:
        """Check both sides of a transfer and return the pair of events."""
        places = minor_units(self.currency)
        amount = positive_money(amount, places)
        self.check_text("description", description)
        if target.id == self.id:
            raise errors.SameAccount("cannot transfer to the same account")
        self.require_debitable()
        target.require_not_closed()
        self.require_same_currency(target)
        self.require_funds(amount, now)
        target.require_within_limit(amount)
        return (
            TransferSent(transfer_id, target.id, amount, description, places),
            TransferReceived(transfer_id, self.id, amount, description, places),
        )

    def set_overdraft_limit(self, limit: Decimal, by: str | None) -> OverdraftLimitSet | None:
        """The new limit; None when it is the limit already (nothing changes). A limit under
        the current debt is allowed: it only refuses further debits."""
        places = minor_units(self.currency)
        limit = to_money(limit, places, "overdraft_limit")
        if limit < ZERO:
            raise errors.InvalidAmount("overdraft_limit must be non-negative", "overdraft_limit")
        self.require_not_closed()
        if limit == self.overdraft_limit:
            return None
        return OverdraftLimitSet(limit, by, places)

    def freeze(self, reason: str, by: str | None) -> AccountFrozen | None:
        """Freeze the account; None when it is frozen already (nothing changes)."""
        if not reason or not reason.strip():
            raise errors.InvalidAccountData("reason is required")
        self.check_text("reason", reason)
        self.require_not_closed()
        return None if self.status == FROZEN else AccountFrozen(reason.strip(), by)

    def unfreeze(self, by: str | None) -> AccountUnfrozen | None:
        """Unfreeze the account; None when it is not frozen (nothing changes)."""
        self.require_not_closed()
        return AccountUnfrozen(by) if self.status == FROZEN else None

    # ---- figures ----------------------------------------------------------------------

    def pending_holds(self, now: datetime | None) -> list[Hold]:
        """The holds that count at `now` (None: every hold not yet settled by an event)."""
        return [hold for hold in self.holds.values() if hold.live(now)]

    def available(self, now: datetime | None) -> Decimal:
        """What a debit may take at `now`: balance - live pending holds + overdraft limit."""
        if not self.holds:  # the usual case, on every debit: no generator to run
            return self.balance + self.overdraft_limit
        held = sum((hold.amount for hold in self.holds.values() if hold.live(now)), ZERO)
        return self.balance - held + self.overdraft_limit

    # ---- apply: the only mutation --------------------------------------------------

    def apply(self, event: DomainEvent, at: datetime | None = None) -> None:
        """Fold one event into the state. Never checks a rule."""
        match event:
            case AccountCreated():
                self.owner_name = event.owner_name
                self.owner_id = event.owner_id
                self.balance = event.initial_balance
                self.currency = event.currency
                self.status = OPEN
                self.created_at = at
            case MoneyDeposited() | TransferReceived():
                self.balance += event.amount
                if self.carried_debt < ZERO:
                    self._carry_debt()
            case MoneyWithdrawn() | TransferSent():
                self.balance -= event.amount
                self.carried_debt = ZERO  # a debit was checked against the limit itself
            case AccountClosed():
                self.status = CLOSED
                self.closed_reason = event.reason
            case HoldPlaced():
                self.holds[event.hold_id] = Hold(
                    event.hold_id,
                    event.amount,
                    event.to_account_id,
                    event.expires_at,
                    event.description,
                )
            case HoldCaptured():
                self.holds.pop(event.hold_id, None)
                self.balance -= event.amount
                self.carried_debt = ZERO
            case HoldVoided() | HoldExpired():
                self.holds.pop(event.hold_id, None)
            case OverdraftLimitSet():
                self.overdraft_limit = event.limit
                self._carry_debt()
            case AccountFrozen():
                self.status = FROZEN
            case AccountUnfrozen():
                self.status = OPEN
            case _:
                raise ValueError(f"Account cannot apply {type(event).__name__}")
        self.version += 1
        self.updated_at = at

    def fold(self, events: Iterable[tuple[DomainEvent, datetime | None]]) -> Account:
        """Apply `events` (each with the time it was recorded) in order; returns self.
        The one place events are folded: from nothing, a snapshot or a cached state."""
        apply = self.apply
        for event, at in events:
            apply(event, at)
        return self

    @classmethod
    def replay(
        cls, account_id: str, events: Iterable[tuple[DomainEvent, datetime | None]]
    ) -> Account:
        return cls(account_id).fold(events)

    def copy(self) -> Account:
        # Every field, positionally: far cheaper than `dataclasses.replace`, and the hot paths
        # copy an account several times per command. tests/unit/test_account.py checks every field.
        return Account(
            self.id,
            self.owner_name,
            self.owner_id,
            self.balance,
            self.currency,
            self.status,
            self.version,
            self.created_at,
            self.updated_at,
            self.closed_reason,
            self.overdraft_limit,
            dict(self.holds),  # a `Hold` is immutable: the dict is what changes
            self.carried_debt,
        )

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    # ---- snapshot form ----------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "id": self.id,
            "owner_name": self.owner_name,
            "owner_id": self.owner_id,
            "balance": format_money(self.balance, minor_units(self.currency)),
            "currency": self.currency,
            "status": self.status,
            "version": self.version,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "closed_reason": self.closed_reason,
        }
        # Only when set, so the snapshot of an account without them is as it always was.
        places = minor_units(self.currency)
        if self.overdraft_limit != ZERO:
            state["overdraft_limit"] = format_money(self.overdraft_limit, places)
        if self.holds:
            state["holds"] = {hold_id: h.to_snapshot() for hold_id, h in self.holds.items()}
        if self.carried_debt != ZERO:
            state["carried_debt"] = format_money(self.carried_debt, places)
        return state

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> Account:
        return cls(
            id=state["id"],
            owner_name=state["owner_name"],
            owner_id=state.get("owner_id"),
            balance=Decimal(state["balance"]),
            currency=state["currency"],
            status=state["status"],
            version=int(state["version"]),
            created_at=_parse_time(state.get("created_at")),
            updated_at=_parse_time(state.get("updated_at")),
            closed_reason=state.get("closed_reason"),
            overdraft_limit=Decimal(state.get("overdraft_limit", ZERO)),
            holds={
                hold_id: Hold.from_snapshot(hold_id, hold)
                for hold_id, hold in (state.get("holds") or {}).items()
            },
            carried_debt=Decimal(state.get("carried_debt", ZERO)),
        )

    # ---- guards -------------------------------------------------------------------------

    @staticmethod
    def check_text(name: str, value: str | None) -> None:
        if value is not None and len(value) > MAX_DESCRIPTION:
            raise errors.InvalidAccountData(f"{name} must be at most {MAX_DESCRIPTION} characters")

    def require_not_closed(self) -> None:
        if self.status == CLOSED:
            raise errors.AccountClosed(self.id)

    def require_debitable(self) -> None:
        """Open: neither closed nor frozen (money may not leave a frozen account)."""
        if self.status != OPEN:
            if self.status == FROZEN:
                raise errors.AccountFrozen(self.id)
            raise errors.AccountClosed(self.id)

    def require_same_currency(self, target: Account) -> None:
        if target.currency != self.currency:
            raise errors.CurrencyMismatch(
                f"cannot move {self.currency} to an account kept in {target.currency}"
            )

    def require_funds(self, amount: Decimal, now: datetime | None) -> None:
        available = self.available(now)
        if amount > available:
            raise errors.InsufficientFunds(self.id, available, amount)

    def require_within_limit(self, amount: Decimal) -> None:
        if self.balance + amount >= LIMIT:
            places = minor_units(self.currency)
            raise errors.BalanceLimitExceeded(
                "the balance would exceed 15 integer digits "
                f"({format_money(self.balance, places)} + {format_money(amount, places)})"
            )

    def _carry_debt(self) -> None:
        """After a credit or a new limit: the debt beyond the limit that stays allowed."""
        below = self.balance < -self.overdraft_limit
        self.carried_debt = self.balance if below else ZERO

    def pending_hold(self, hold_id: str, now: datetime) -> Hold:
        hold = self.holds.get(hold_id)
        if hold is None or not hold.live(now):
            raise errors.HoldNotPending(hold_id)
        return hold


def lowest_allowed_balance(account: Account) -> Decimal:
    """The lowest balance the rules allow `account` to reach: the one rule of funds, used
    by `banking-es verify` on every recorded event (the debit guards check `available`,
    which is never below it). Minus the overdraft limit, or a debt carried from when the
    limit was lowered under it. Its SQL form (`LOWEST_ALLOWED`, verify/sql.py) is held to
    this function by a test."""
    return min(-account.overdraft_limit, account.carried_debt)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
