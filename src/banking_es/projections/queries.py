"""Reads of the projections, for `GET /accounts` and `GET /accounts/{id}/transactions`.

Both are keyset-paginated: a page asks for one row more than `limit` to learn whether
another page follows. The cursor values are plain columns (`created_position`,
`version`); turning them into opaque API cursors is the HTTP layer's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from banking_es.db.base import Database, Row


@dataclass(frozen=True, slots=True)
class AccountSummary:
    account_id: str
    owner_name: str
    owner_id: str | None
    balance: Decimal
    currency: str
    status: str
    version: int
    created_position: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TransactionRow:
    id: str
    account_id: str
    type: str
    amount: Decimal
    balance_after: Decimal
    description: str | None
    version: int
    transfer_id: str | None
    position: int
    occurred_at: datetime
    #: A `hold` row's hold: pending, captured, voided or expired; None on other rows.
    status: str | None = None


_SUMMARY_COLUMNS = (
    "account_id, owner_name, owner_id, balance, currency, status, version,"
    " created_position, created_at, updated_at"
)
_TRANSACTION_COLUMNS = (
    "id, account_id, type, amount, balance_after, description, version, transfer_id,"
    " position, occurred_at, status"
)


def _summary(row: Row) -> AccountSummary:
    return AccountSummary(
        account_id=row["account_id"],
        owner_name=row["owner_name"],
        owner_id=row["owner_id"],
        balance=row["balance"],
        currency=row["currency"],
        status=row["status"],
        version=row["version"],
        created_position=row["created_position"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _transaction(row: Row) -> TransactionRow:
    return TransactionRow(
        id=row["id"],
        account_id=row["account_id"],
        type=row["type"],
        amount=row["amount"],
        balance_after=row["balance_after"],
        description=row["description"],
        version=row["version"],
        transfer_id=row["transfer_id"],
        position=row["position"],
        occurred_at=row["occurred_at"],
        status=row["status"],
    )


class ReadModels:
    """Queries over `account_summaries` and `transactions`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_accounts(
        self, owner_id: str | None, after: int | None, limit: int
    ) -> tuple[list[AccountSummary], bool]:
        """Accounts oldest first (by `created_position`), after the cursor; None owner: all."""
        _check_limit(limit)
        conditions: list[str] = []
        args: list[Any] = []
        if owner_id is not None:
            args.append(owner_id)
            conditions.append(f"owner_id = ${len(args)}")
        if after is not None:
            args.append(after)
            conditions.append(f"created_position > ${len(args)}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        args.append(limit + 1)
        rows = await self._db.fetch(
            f"SELECT {_SUMMARY_COLUMNS} FROM account_summaries{where}"
            f" ORDER BY created_position LIMIT ${len(args)}",
            *args,
        )
        return [_summary(r) for r in rows[:limit]], len(rows) > limit

    async def list_transactions(
        self, account_id: str, before_version: int | None, limit: int
    ) -> tuple[list[TransactionRow], bool]:
        """An account's transactions newest first (by `version`), before the cursor."""
        _check_limit(limit)
        args: list[Any] = [account_id]
        condition = ""
        if before_version is not None:
            args.append(before_version)
            condition = " AND version < $2"
        args.append(limit + 1)
        rows = await self._db.fetch(
            f"SELECT {_TRANSACTION_COLUMNS} FROM transactions WHERE account_id = $1{condition}"
            f" ORDER BY version DESC LIMIT ${len(args)}",
            *args,
        )
        return [_transaction(r) for r in rows[:limit]], len(rows) > limit


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
