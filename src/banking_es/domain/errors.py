"""Domain errors: a rule of the bank said no.

DomainError
├── InvalidAmount           amount not > 0, more decimals than its currency, or too many digits
├── InvalidAccountData      owner name or currency unusable
├── InsufficientFunds       withdrawal or transfer beyond the balance
├── BalanceLimitExceeded    a balance would exceed 15 integer digits
├── AccountClosed           any write to a closed account
├── BalanceNotZero          closing an account that still holds money
├── CurrencyMismatch        transfer between accounts of different currencies
└── SameAccount             transfer from an account to itself
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
