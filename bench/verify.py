"""`banking-es verify` over a generated store: `python -m bench.verify [--events N]`.

Fills a scratch PostgreSQL database with `COPY`: accounts opened, then deposits,
withdrawals and transfers (both sides in one commit), a snapshot every 100 versions,
both read models at the head and an outbox row per event (as with Kafka on); the
snapshots and read-model rows are made by the same domain and projection code the
service uses. Then times `verify` in process `--runs` times (with its CPU and, read from
/proc, that of the PostgreSQL backends), EXPLAIN ANALYZEs its statements (PostgreSQL's own
time) and times the `banking-es verify` command.
`--database NAME` fills NAME once (when it does not exist) and keeps it for the next runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.domain.account import CLOSED, OPEN, Account
from banking_es.domain.events import SCHEMA_VERSION
from banking_es.eventstore.base import EVENTS_TOPIC, RecordedEvent
from banking_es.eventstore.codec import to_domain
from banking_es.projections.account_summaries import Summary, fold_summaries
from banking_es.projections.transactions import transaction_rows
from banking_es.verify import sql, verify
from banking_es.verify.postgres import SETTINGS
from bench.common import ADMIN_URL, db_url, load_average, say, scratch_database

ACCOUNTS = 10_000
SNAPSHOT_EVERY = 100
_EVENT_COLUMNS = ["position", "stream_id", "version", "event_id", "type", "data", "metadata",
                  "recorded_at"]  # fmt: skip
_T_COLUMNS = ["id", "account_id", "type", "amount", "balance_after", "description", "version",
              "transfer_id", "position", "occurred_at", "status", "settled_position"]  # fmt: skip


class _Store:
    """The rows of every table, made as the events are generated."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.snapshots: list[tuple[Any, ...]] = []
        self.transactions: list[tuple[Any, ...]] = []
        self.outbox: list[tuple[Any, ...]] = []
        self.accounts: dict[str, Account] = {}
        self.summaries: dict[str, Summary] = {}
        self.balances: dict[str, Decimal] = {}

    def add(self, stream: str, kind: str, data: dict[str, Any], at: datetime) -> None:
        account = self.accounts.setdefault(stream, Account(stream))
        position = len(self.events) + 1
        meta = {"command": kind, "request_id": uuid.uuid4().hex, "schema": 1}
        recorded = RecordedEvent(
            position, stream, account.version + 1, str(uuid.uuid4()), kind, data, meta, at
        )
        account.apply(to_domain(recorded), at)
        self.events.append(
            (position, stream, recorded.version, recorded.event_id, kind,
             orjson.dumps(data).decode(), orjson.dumps(meta).decode(), at)
        )  # fmt: skip
        if account.version % SNAPSHOT_EVERY == 0:
            state = orjson.dumps(account.to_snapshot()).decode()
            self.snapshots.append((stream, account.version, state))
        fold_summaries(self.summaries, (recorded,), set())
        self.transactions.extend(transaction_rows((recorded,), self.balances))
        self.outbox.append(("events", stream, None, position, at))


def generate(events: int, seed: int = 7) -> _Store:
    rng = random.Random(seed)
    store = _Store()
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(ACCOUNTS)]
    at = datetime.now(UTC) - timedelta(days=30)
    for i, stream in enumerate(ids):
        data = {"account_id": stream, "owner_name": f"Owner {i}", "initial_balance": "1000.00",
                "currency": "USD", "owner_id": None}  # fmt: skip
        store.add(stream, "AccountCreated", data, at)
        at += timedelta(microseconds=50)
    while len(store.events) < events:
        at += timedelta(microseconds=50)
        stream = rng.choice(ids)
        amount = Decimal(rng.randint(1, 5000)) / 100
        draw = rng.random()
        if draw < 0.3 and len(store.events) + 2 <= events:
            target = rng.choice(ids)
            if target != stream and store.accounts[stream].balance >= amount:
                transfer = str(uuid.uuid4())
                money = f"{amount:.2f}"
                store.add(stream, "TransferSent", {"transfer_id": transfer, "to_account_id": target,
                          "amount": money, "description": "rent"}, at)  # fmt: skip
                store.add(target, "TransferReceived", {"transfer_id": transfer, "from_account_id":
                          stream, "amount": money, "description": "rent"}, at)  # fmt: skip
                continue
        if draw < 0.6 and store.accounts[stream].balance >= amount:
            store.add(
                stream, "MoneyWithdrawn", {"amount": f"{amount:.2f}", "description": None}, at
            )
        else:
            store.add(
                stream, "MoneyDeposited", {"amount": f"{amount:.2f}", "description": "pay"}, at
            )
    return store


async def fill(url: str, store: _Store) -> None:
    db = await PostgresDatabase.connect(url, max_size=2)
    try:
        await migrate(db)
    finally:
        await db.close()
    conn = await asyncpg.connect(url)
    try:
        head = len(store.events)
        await conn.copy_records_to_table("events", records=store.events, columns=_EVENT_COLUMNS)
        await conn.copy_records_to_table(
            "snapshots", records=store.snapshots, columns=["stream_id", "version", "state"]
        )
        await conn.copy_records_to_table(
            "account_summaries",
            records=[s.values() for s in store.summaries.values()],
            columns=[f.name for f in fields(Summary)],
        )
        await conn.copy_records_to_table(
            "transactions", records=store.transactions, columns=_T_COLUMNS
        )
        await conn.copy_records_to_table(
            "outbox",
            records=store.outbox,
            columns=["topic", "key", "payload", "event_position", "created_at"],
        )
        await conn.executemany(
            "INSERT INTO projection_checkpoints (name, position, updated_at)"
            " VALUES ($1, $2, now())",
            [("account_summaries", head), ("transactions", head)],
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def run(events: int, database: str | None, runs: int) -> None:
    if database is None:
        async with scratch_database("verify") as url:
            await _generate_and_fill(url, events)
            await _time_verify(url, runs)
        return
    url = db_url(database)
    try:
        conn = await asyncpg.connect(url)
        await conn.close()
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        await _generate_and_fill(url, events)
    await _time_verify(url, runs)


async def _generate_and_fill(url: str, events: int) -> None:
    say(f"generating {events:,} events over {ACCOUNTS:,} accounts")
    store = generate(events)
    say("COPY into the tables")
    started = time.perf_counter()
    await fill(url, store)
    say(f"filled in {time.perf_counter() - started:.1f} s")


async def _time_verify(url: str, runs: int = 1) -> None:
    db = await PostgresDatabase.connect(url, min_size=2, max_size=2)
    try:
        for _ in range(runs):
            await _one_run(db)
        await _explain(db)
    finally:
        await db.close()
    env = {**os.environ, "DATABASE_URL": url}
    say(f"load average {load_average()}")
    started = time.perf_counter()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "banking_es", "verify"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    say(f"banking-es verify: exit {done.returncode} in {elapsed:.2f} s (with start-up)")
    say(done.stdout.strip())


async def _one_run(db: PostgresDatabase) -> None:
    """One `verify` in process: wall rate, and the CPU of this process and of the two
    PostgreSQL backends (parallel workers, which come and go, are not counted)."""
    say(f"load average {load_average()}; calibration: {calibration():.1f} us of CPU per"
        " sum(range(1000))")  # fmt: skip
    backends = [int(r["pid"]) for r in await db.fetch(_BACKENDS)]
    server = _cpu_seconds(backends)
    cpu = time.process_time()
    report = await verify(db)
    cpu = time.process_time() - cpu
    after = _cpu_seconds(backends)
    server = after - server if min(server, after) >= 0 else -1.0
    assert report.sound, report.problems
    rate = report.events / report.seconds
    shown = f"{server:.2f} s" if server >= 0 else "unknown (not local)"
    say(f"verify in process: {report.events:,} events in {report.seconds:.2f} s,"
        f" {rate:,.0f} events/s; CPU: client {cpu:.2f} s, PostgreSQL backends {shown};"
        f" load average after {load_average()}")  # fmt: skip


async def _explain(db: PostgresDatabase) -> None:
    """PostgreSQL's own time for each statement of the pass (EXPLAIN ANALYZE, same
    settings), the figure to compare when neighbours load the machine."""
    head = int(await db.fetchval("SELECT coalesce(max(position), 0) FROM events"))
    statements: dict[str, tuple[str, tuple[Any, ...]]] = {
        "FOLD": (sql.FOLD, (str(SCHEMA_VERSION), head, head, OPEN, CLOSED)),
        "TRANSFERS": (sql.TRANSFERS, ([],)),
        "OUTBOX": (sql.OUTBOX, (EVENTS_TOPIC,)),
    }
    async with db.snapshot() as conn:
        for setting in SETTINGS:
            await conn.execute(setting)
        for name, (statement, args) in statements.items():
            plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, *args)
            took = plan[0]["Execution Time"] / 1000
            say(f"EXPLAIN ANALYZE {name}: {took:.2f} s (load average {load_average()})")


_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of these PostgreSQL backends from /proc (the server is local
    here); -1 when it cannot be read."""
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields_ = f.read().rsplit(")", 1)[1].split()
            total += (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return -1.0
    return total


def calibration() -> float:
    """Microseconds of this process's CPU per `sum(range(1000))`: how fast a core runs
    Python now (a loaded machine shares its cores, and each CPU second does less)."""
    started = time.process_time()
    for _ in range(20_000):
        sum(range(1000))
    return (time.process_time() - started) / 20_000 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--database",
        help="a database to fill (if it does not exist) and keep, instead of a scratch one",
    )
    parser.add_argument("--runs", type=int, default=3, help="verify runs in process")
    args = parser.parse_args()
    if args.events < ACCOUNTS:
        parser.error(f"--events must be at least {ACCOUNTS}")
    asyncio.run(run(args.events, args.database, args.runs))


if __name__ == "__main__":
    main()
