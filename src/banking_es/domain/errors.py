"""Domain errors: a rule of the bank said no.

DomainError
├── InvalidAmount           amount not > 0, more decimals than its currency, or too many digits
├── InvalidAccountData      owner name or currency unusable
├── InsufficientFunds       withdrawal or transfer beyond the balance
├── BalanceLimitExceeded    a balance would exceed 15 integer digits
├── AccountClosed           any write to a closed account
├── BalanceNotZero          closing an account that still holds money
├── CurrencyMismatch        transfer between accounts of different currencies
├── SameAccount             transfer from an account to itself
├── AccountFrozen           a debit (or closing) while the account is frozen
├── HoldNotPending          the hold was captured, voided or expired (or is past its expiry)
├── HoldNotDue              expiring a hold before its expiry (the expiry job only)
├── AmountExceedsHold       capturing more than the hold reserved
├── HoldsPending            closing an account that still has pending holds
└── TooManyHolds            a hold beyond the pending holds an account may have
"""

from __future__ import annotations

from decimal import Decimal


class DomainError(Exception):
    """Base of every business-rule violation; carries a stable `code`."""

    code = "domain_error"


class InvalidAmount(DomainError):
    """An amount that money cannot be: not positive, more decimals than its currency has, or
    16+ integer digits. `field` names the request field it came from."""

    code = "validation_error"

    def __init__(self, message: str, field: str = "amount") -> None:
        super().__init__(message)
        self.field = field


class InvalidAccountData(DomainError):
    """Owner name or currency that an account cannot have."""

    code = "validation_error"


class InsufficientFunds(DomainError):
    """The balance does not cover the withdrawal or transfer."""

    code = "insufficient_funds"

    def __init__(self, account_id: str, balance: Decimal, amount: Decimal) -> None:
        super().__init__(
            f"insufficient funds: balance {balance:f} is less than the amount {amount:f}"
        )
        self.account_id = account_id
        self.balance = balance
        self.amount = amount


class BalanceLimitExceeded(DomainError):
    """The resulting balance would not fit 15 integer digits."""

    code = "balance_limit_exceeded"


class AccountClosed(DomainError):
    """The account is closed; it accepts no more writes."""

    code = "account_closed"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} is closed")
        self.account_id = account_id


class BalanceNotZero(DomainError):
    """Only an account with a zero balance may be closed."""

    code = "balance_not_zero"

    def __init__(self, account_id: str, balance: Decimal) -> None:
        super().__init__(f"account {account_id} still holds {balance:f}; withdraw it first")
        self.account_id = account_id
        self.balance = balance


class CurrencyMismatch(DomainError):
    """A transfer between accounts kept in different currencies."""

    code = "currency_mismatch"


class SameAccount(DomainError):
    """A transfer whose source and target are the same account."""

    code = "same_account"


class AccountFrozen(DomainError):
    """The account is frozen: it refuses debits until unfrozen, and still receives credits."""

    code = "account_frozen"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id} is frozen")
        self.account_id = account_id


class HoldNotPending(DomainError):
    """The hold is no longer pending: captured, voided, expired, or past its `expires_at`."""

    code = "hold_not_pending"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"hold {hold_id} is not pending")
        self.hold_id = hold_id


class HoldNotDue(DomainError):
    """A pending hold whose expiry has not come yet cannot be expired."""

    code = "hold_not_due"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"hold {hold_id} has not reached its expiry")
        self.hold_id = hold_id


class AmountExceedsHold(DomainError):
    """A capture larger than the amount the hold reserved."""

    code = "amount_exceeds_hold"


class HoldsPending(DomainError):
    """An account with pending holds cannot be closed: capture or void them first."""

    code = "holds_pending"


class TooManyHolds(DomainError):
    """The account already has as many pending holds as it may."""

    code = "too_many_holds"
