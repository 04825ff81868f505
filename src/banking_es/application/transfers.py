"""Transfers between two accounts: both events in one append, through the multi-stream
writer (application/multistream.py: both streams locked, a conflict retried)."""

from __future__ import annotations

from datetime import datetime

from banking_es.application.context import CommandContext, Replayed
from banking_es.application.multistream import MultiStreamWriter
from banking_es.application.ports import IdGenerator
from banking_es.application.results import TransferResult
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.domain.errors import SameAccount
from banking_es.domain.events import DomainEvent


class Transfers:
    """The transfer command handler."""

    def __init__(self, writer: MultiStreamWriter, ids: IdGenerator) -> None:
        self._writer = writer
        self._ids = ids

    async def transfer(
        self, command: cmd.Transfer, context: CommandContext
    ) -> TransferResult | Replayed:
        if command.from_account_id == command.to_account_id:
            raise SameAccount("cannot transfer to the same account")
        transfer_id = self._ids.new_event_id()

        def decide(
            states: list[Account], now: datetime
        ) -> tuple[list[DomainEvent | None], TransferResult]:
            source, target = states
            sent, received = source.send_transfer(
                transfer_id, target, command.amount, command.description, now
            )
            result = TransferResult(
                transfer_id,
                source.id,
                target.id,
                sent.amount,
                source.currency,
                command.description,
                None,
            )
            return [sent, received], result

        return await self._writer.write(
            "Transfer",
            [command.from_account_id, command.to_account_id],
            decide,
            context,
            first_event_id=transfer_id,
            attributes={
                "account.id": command.from_account_id,
                "transfer.to_account_id": command.to_account_id,
            },
        )
