"""A statement as the API's JSON fields and as CSV, and which of them an `Accept` header wants.

JSON and CSV share one set of line fields (`LINE_FIELDS`): amounts as exact decimal strings,
times as RFC 3339 in UTC. CSV cells that a spreadsheet would run as a formula are defused.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import mimeparse

from banking_es.application.statements import Statement, StatementLine
from banking_es.domain.money import format_in

Format = Literal["json", "csv", "pdf"]
#: Media type -> format; JSON last, so it wins ties (e.g. `*/*`): mimeparse prefers the later.
MEDIA_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/pdf": "pdf",
    "application/json": "json",
}
CONTENT_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
}
LINE_FIELDS = ("occurred_at", "type", "description", "amount", "balance_after", "reference")
#: Leading characters that make a spreadsheet read a cell as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def negotiate(accept: str | None) -> Format | None:
    """The format an `Accept` header asks for: JSON when it is absent or empty, None when
    nothing we make is acceptable (or the header cannot be parsed): the API's 406."""
    if accept is None or not accept.strip():
        return "json"
    try:
        best = mimeparse.best_match(list(MEDIA_TYPES), accept.lower())
    except mimeparse.MimeTypeParseException:
        return None
    return MEDIA_TYPES.get(best)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def money(amount: Decimal, currency: str) -> str:
    """An amount as the API writes it, in its currency's decimals (the one place a statement
    formats money)."""
    return format_in(amount, currency)


def line_dict(line: StatementLine, currency: str) -> dict[str, Any]:
    return {
        "occurred_at": rfc3339(line.occurred_at),
        "type": line.type,
        "description": line.description,
        "amount": money(line.amount, currency),
        "balance_after": money(line.balance_after, currency),
        "reference": line.reference,
    }


def statement_dict(statement: Statement) -> dict[str, Any]:
    """The body of `GET /accounts/{id}/statement` as JSON (API.md)."""
    return {
        "account_id": statement.account_id,
        "currency": statement.currency,
        "from": statement.period.first.isoformat(),
        "to": statement.period.last.isoformat(),
        "opening_balance": money(statement.opening_balance, statement.currency),
        "closing_balance": money(statement.closing_balance, statement.currency),
        "total_in": money(statement.total_in, statement.currency),
        "total_out": money(statement.total_out, statement.currency),
        "lines": [line_dict(line, statement.currency) for line in statement.lines],
    }


def statement_csv(statement: Statement) -> bytes:
    """One header row (`LINE_FIELDS`), then one row per line, oldest first (UTF-8)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LINE_FIELDS)
    for line in statement.lines:
        row = line_dict(line, statement.currency)
        row["description"] = _defused(row["description"])
        writer.writerow(["" if row[name] is None else row[name] for name in LINE_FIELDS])
    return out.getvalue().encode()


def _defused(text: str | None) -> str | None:
    """A customer's description starting like a formula gets a leading apostrophe (OWASP)."""
    if text and text.startswith(_FORMULA_START):
        return "'" + text
    return text
