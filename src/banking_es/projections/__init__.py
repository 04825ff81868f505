"""Projections: read models derived from the event store, eventually consistent.

`account_summaries` (one row per account) and `transactions` (one row per money
movement) are kept by a `ProjectionRunner` (see `runner.py`), which applies each batch
of events and moves the projection's checkpoint in one transaction, so every event takes
effect exactly once, also after a crash. `ReadModels` (`queries.py`) reads them for the
list endpoints.
"""

from __future__ import annotations

from banking_es.projections.account_summaries import AccountSummariesProjection
from banking_es.projections.base import Projection
from banking_es.projections.transactions import TransactionsProjection


def default_projections() -> list[Projection]:
    """The projections the service keeps: account summaries and transactions."""
    return [AccountSummariesProjection(), TransactionsProjection()]


__all__ = [
    "AccountSummariesProjection",
    "Projection",
    "TransactionsProjection",
    "default_projections",
]
