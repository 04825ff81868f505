"""Response bodies: an account's timestamps, written by orjson, read as `rfc3339` writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given
from hypothesis import strategies as st

from banking_es.api import render
from banking_es.domain.account import Account
from banking_es.domain.hold import Hold

ZONES = st.none() | st.sampled_from(
    [UTC, ZoneInfo("UTC"), timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
)


def _account(created: datetime | None, updated: datetime | None) -> Account:
    account = Account("4b0a2f5e-8a53-4c5e-9d0f-2f4f0d1b6c11")
    account.owner_name = "Ada"
    account.balance = Decimal("12.5")
    account.currency = "USD"
    account.status = "open"
    account.version = 3
    account.created_at = created
    account.updated_at = updated
    return account


@given(
    created=st.datetimes(timezones=ZONES),
    updated=st.datetimes(timezones=ZONES) | st.none(),
)
def test_account_timestamps_are_written_as_rfc3339_writes_them(
    created: datetime, updated: datetime | None
) -> None:
    body = orjson.loads(render.account_json(_account(created, updated)))
    assert body["created_at"] == render.rfc3339(created)
    assert body["updated_at"] == render.rfc3339(updated)


def test_an_account_body_in_full() -> None:
    created = datetime(2026, 12, 6, 4, 53, 26, 280803, tzinfo=UTC)
    updated = datetime(2026, 12, 6, 5, 0, 0, tzinfo=UTC)
    body = render.account_json(_account(created, updated), ["a warning"])
    assert orjson.loads(body) == {
        "id": "4b0a2f5e-8a53-4c5e-9d0f-2f4f0d1b6c11",
        "owner_name": "Ada",
        "balance": "12.50",
        "available": "12.50",
        "overdraft_limit": "0.00",
        "currency": "USD",
        "status": "open",
        "version": 3,
        "created_at": "2026-12-06T04:53:26.280803Z",
        "updated_at": "2026-12-06T05:00:00Z",
        "warnings": ["a warning"],
    }


def test_available_counts_the_holds_live_at_now() -> None:
    account = _account(datetime(2026, 12, 6, tzinfo=UTC), None)
    account.overdraft_limit = Decimal("5")
    expires = datetime(2026, 12, 7, tzinfo=UTC)
    account.holds["h"] = Hold("h", Decimal("2.25"), None, expires)
    before = orjson.loads(render.account_json(account, now=expires - timedelta(seconds=1)))
    after = orjson.loads(render.account_json(account, now=expires))
    assert (before["available"], after["available"]) == ("15.25", "17.50")
    assert before["overdraft_limit"] == "5.00"
