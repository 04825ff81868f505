"""Domain and read-model objects to response JSON bytes (amounts with their currency's digits)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from banking_es.api.problems import ApiError
from banking_es.api.ranges import INT4_MAX, INT8_MAX
from banking_es.application.accounts import TransferResult
from banking_es.domain.account import Account
from banking_es.domain.events import customer_data
from banking_es.domain.money import format_in
from banking_es.eventstore.base import RecordedEvent


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339, UTC written as "Z"."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def account_dict(
    account: Account, now: datetime | None, warnings: Sequence[str] = ()
) -> dict[str, Any]:
    """The account object of API.md, the one form of it: every write's answer,
    `GET /accounts/{id}` and each row of `GET /accounts`. `available` counts the holds still
    live at `now` (a hold past its expiry no longer). The datetimes stay objects: orjson
    writes them itself (`OPT_UTC_Z`), a fifth of the time of `isoformat`."""
    currency = account.currency
    body: dict[str, Any] = {
        "id": account.id,
        "owner_name": account.owner_name,
        "balance": format_in(account.balance, currency),
        "available": format_in(account.available(now), currency),
        "overdraft_limit": format_in(account.overdraft_limit, currency),
        "currency": account.currency,
        "status": account.status,
        "version": account.version,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }
    if warnings:
        body["warnings"] = list(warnings)
    return body


def account_json(
    account: Account, warnings: Sequence[str] = (), now: datetime | None = None
) -> bytes:
    """`account_dict` as JSON bytes."""
    return orjson.dumps(account_dict(account, now, warnings), option=orjson.OPT_UTC_Z)


def transfer_dict(transfer: TransferResult, warnings: Sequence[str] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": transfer.id,
        "from_account_id": transfer.from_account_id,
        "to_account_id": transfer.to_account_id,
        "amount": format_in(transfer.amount, transfer.currency),
        "currency": transfer.currency,
        "status": transfer.status,
        "created_at": rfc3339(transfer.created_at),
    }
    if warnings:
        body["warnings"] = list(warnings)
    return body


def transfer_json(transfer: TransferResult, warnings: Sequence[str] = ()) -> bytes:
    return orjson.dumps(transfer_dict(transfer, warnings))


def event_dict(event: RecordedEvent, customer: bool = False) -> dict[str, Any]:
    """An audit-log entry; a customer's leaves out what compliance keeps from the holder
    (who froze the account and why: `customer_data`)."""
    return {
        "event_id": event.event_id,
        "position": event.position,
        "version": event.version,
        "type": event.type,
        "data": customer_data(event.type, event.data) if customer else event.data,
        "recorded_at": rfc3339(event.recorded_at),
    }


def page(data: list[dict[str, Any]], has_more: bool, next_cursor: str | None) -> bytes:
    """A list's page; datetimes in `data` are written as `account_json` writes them."""
    body = {"data": data, "has_more": has_more, "next_cursor": next_cursor}
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


#: Each cursor's column: `a` an account's created_position (bigint), `v` and `t` versions,
#: `d` a dead letter's id and `m` a mail's (bigint), `h` a hold's number on its account.
CURSOR_MAX = {"a": INT8_MAX, "v": INT4_MAX, "t": INT4_MAX, "d": INT8_MAX, "m": INT8_MAX,
              "h": INT4_MAX}  # fmt: skip


def decode_cursor(kind: str, cursor: str | None) -> int | None:
    """The integer in a cursor made by `encode_cursor(kind, ...)`; 400 for anything else,
    a number beyond its column included (it would reach SQL)."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != kind or not (number.isascii() and number.isdigit()) or len(number) > 19:
            raise ValueError(text)
        value = int(number)
        if value > CURSOR_MAX[kind]:
            raise ValueError(text)
        return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "the cursor is not valid for this list") from None


def decode_id_cursor(cursor: str | None) -> str | None:
    """A cursor that is a row's UUID (the last one of the page before); 400 for anything else,
    which would otherwise reach SQL as text (a NUL in it is a driver error)."""
    if cursor is None:
        return None
    try:
        return str(UUID(cursor))
    except ValueError:
        raise ApiError(400, "invalid_cursor", "the cursor is not valid for this list") from None
