"""Scratch PostgreSQL databases, progress output and timing helpers shared by the rows."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from banking_es.application.ports import UuidGenerator

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_STARTED = time.monotonic()


def positive_int(value: str) -> int:
    """argparse's `type` for a count: a bad one is a usage error (exit 2), nothing runs."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


def say(message: str) -> None:
    """A progress line on stderr, with the seconds since the bench started."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def db_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def scratch_database(label: str) -> AsyncIterator[str]:
    """A fresh database on the server of `ADMIN_URL`, dropped afterwards; yields its URL."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield db_url(name)
    finally:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def conflicts_per_thousand(counted: dict[str, float]) -> float:
    """Version conflicts per 1,000 commands executed (conflicts are retries, not commands)."""
    done = sum(value for outcome, value in counted.items() if outcome != "conflict")
    return counted.get("conflict", 0.0) * 1000 / done if done else float("inf")


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


_IDS = UuidGenerator()


def event_rows(
    count: int, now: datetime, accounts_count: int = 10_000
) -> Iterator[tuple[Any, ...]]:
    """`count` realistic events rows (accounts opened, then deposits and withdrawals) over
    `accounts_count` accounts, made as they are consumed (flat memory)."""
    accounts = [str(uuid.uuid4()) for _ in range(min(accounts_count, count))]
    per_account = -(-count // len(accounts))
    meta = '{"command": "%s", "request_id": "%s", "correlation_id": "%s", "schema": 1}'
    position = 0
    for version in range(1, per_account + 1):
        at = now - timedelta(seconds=per_account - version)
        for i, account_id in enumerate(accounts):
            if position == count:
                return
            position += 1
            request_id = uuid.uuid4().hex
            if version == 1:
                kind, command = "AccountCreated", "OpenAccount"
                data = (
                    f'{{"account_id": "{account_id}", "owner_name": "Owner {i}",'
                    ' "initial_balance": "1000.00", "currency": "USD", "owner_id": null}'
                )
            elif version % 3:
                kind, command = "MoneyDeposited", "Deposit"
                data = '{"amount": "10.00", "description": "salary"}'
            else:
                kind, command = "MoneyWithdrawn", "Withdraw"
                data = '{"amount": "5.00", "description": "groceries"}'
            yield (
                position,
                account_id,
                version,
                _IDS.new_event_id(),
                kind,
                data,
                meta % (command, request_id, request_id),
                at,
            )
