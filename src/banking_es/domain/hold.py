"""A pending hold as its account's state keeps it (the rules are in `domain.holds`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Hold:
    """A pending hold as its account's state keeps it."""

    hold_id: str
    amount: Decimal
    to_account_id: str | None
    expires_at: datetime
    description: str | None = None

    def live(self, now: datetime | None) -> bool:
        """Still counted against the account at `now` (None: whatever the time, which is
        what replaying events does: only the events decide what they fold)."""
        return now is None or now < self.expires_at

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "amount": str(self.amount),  # as recorded, with its currency's digits
            "to_account_id": self.to_account_id,
            "expires_at": self.expires_at.isoformat(),
            "description": self.description,
        }

    @classmethod
    def from_snapshot(cls, hold_id: str, state: dict[str, Any]) -> Hold:
        return cls(
            hold_id,
            Decimal(state["amount"]),
            state.get("to_account_id"),
            datetime.fromisoformat(state["expires_at"]),
            state.get("description"),
        )
