"""Bodies of the hold routes (/accounts/{id}/holds, /holds/{id}), for validation and the
OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from banking_es.api.schemas import Description, PositiveAmount, Uuid
from banking_es.domain.holds import MAX_EXPIRES_IN

HoldStatus = Literal["pending", "captured", "voided", "expired"]
ExpiresIn = Annotated[
    int,
    Meta(ge=1, le=MAX_EXPIRES_IN, description="Seconds until the hold expires (default 7 days)"),
]


class _Body(Struct, forbid_unknown_fields=True):
    """A request body (checked by `api/fields.py`, which refuses unknown fields)."""


class PlaceHoldRequest(_Body):
    amount: PositiveAmount
    to_account_id: Uuid | None = None
    expires_in: ExpiresIn | None = None
    description: Description | None = None


class CaptureHoldRequest(_Body):
    #: None: the whole hold.
    amount: PositiveAmount | None = None


class VoidHoldRequest(_Body):
    """Nothing to say (a body, if any, must be `{}`)."""


class HoldQuery(Struct, frozen=True):
    status: HoldStatus | None = None
    limit: Annotated[int, Meta(ge=1, le=100, description="Page size, 1-100")] = 20
    cursor: Annotated[str, Meta(max_length=200, description="Opaque cursor")] | None = None


class HoldOut(Struct, kw_only=True):
    id: str
    account_id: str
    to_account_id: str | None
    amount: Annotated[str, Meta(examples=["25.00"])]
    captured_amount: Annotated[str, Meta(examples=["0.00"])]
    currency: str
    status: HoldStatus
    expires_at: datetime
    description: str | None
    created_at: datetime


class HoldPage(Struct):
    data: list[HoldOut]
    has_more: bool
    next_cursor: str | None
