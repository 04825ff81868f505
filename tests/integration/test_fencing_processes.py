"""Shards with real processes on PostgreSQL. A cold start of three instances at once ends with
every shard owned and even shares. An owner is paused (SIGSTOP) past its lease while a command
is in flight; another instance takes the shard and writes; the paused one is continued
(SIGCONT). Its in-flight append, fenced by the epoch that ended, is refused by the store (it
says so), and none of its appends lands after the other instance's first: the store refused
it, not the timing."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from tests.integration.shard_writer import SHARDS

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.shards.leases import ShardLeases

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TTL = 1.0


async def _writer(
    url: str, name: str, account: str, pause: float, rebalance: float = 3600.0
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.integration.shard_writer"),
        *(url, name, account, str(TTL), str(pause), str(rebalance)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


async def _line(process: asyncio.subprocess.Process, prefix: str) -> str:
    assert process.stdout is not None
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert line, "the writer ended"
        if line.startswith(prefix):
            return line


async def test_a_paused_owners_in_flight_append_is_refused_by_the_store(pg_url: str) -> None:
    setup = await PostgresDatabase.connect(pg_url, max_size=2)
    await migrate(setup)
    await ShardLeases(setup, ttl=TTL).ensure_shard_count(SHARDS)
    await setup.close()
    account = "acc-fenced"
    paused = await _writer(pg_url, "paused", account, pause=0.5)
    taker = None
    try:
        await _line(paused, "wrote")  # it owns the shard and writes
        stale = int((await _line(paused, "captured")).split()[1])
        paused.send_signal(signal.SIGSTOP)  # inside its pause, a fence in hand
        await asyncio.sleep(TTL + 1.0)  # its lease and its heartbeat lapse
        taker = await _writer(pg_url, "taker", account, pause=0.05)
        assert (await _line(taker, "wrote")).split()[1] == str(stale + 1)
        paused.send_signal(signal.SIGCONT)
        assert await _line(paused, "fenced") == f"fenced {stale}"
        await _line(taker, "wrote")  # the new owner goes on writing
    finally:
        for process in (paused, taker):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                await process.wait()
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT position, version, metadata->>'writer' AS writer,"
            " (metadata->>'epoch')::int AS epoch FROM events WHERE stream_id = $1"
            " ORDER BY version",
            account,
        )
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == list(range(1, len(rows) + 1))
    first_taken = min(r["position"] for r in rows if r["writer"] == "taker")
    assert all(r["position"] < first_taken for r in rows if r["writer"] == "paused")
    assert {r["epoch"] for r in rows if r["writer"] == "paused"} == {stale}
    assert {r["epoch"] for r in rows if r["writer"] == "taker"} == {stale + 1}


async def test_a_cold_start_of_three_processes_gives_each_shard_one_owner(pg_url: str) -> None:
    setup = await PostgresDatabase.connect(pg_url, max_size=2)
    await migrate(setup)
    leases = ShardLeases(setup, ttl=TTL)
    await leases.ensure_shard_count(SHARDS)
    names = ["i0", "i1", "i2"]
    # Rebalancing every second: a process that starts late (slow to import on a busy
    # machine) gets its share from the others through handovers.
    writers = await asyncio.gather(*(_writer(pg_url, n, f"acc-{n}", 0.05, 1.0) for n in names))
    try:
        deadline = asyncio.get_running_loop().time() + 30 * TTL
        while True:  # started at once: until every shard is owned and the shares are even
            await asyncio.sleep(TTL / 3)
            states = await leases.states()
            # held: assigned, or being handed over but not yet released
            owners = [s.owner for s in states if s.owner is not None and s.status != "failed"]
            if len(owners) == SHARDS:
                held = Counter(owners)
                assert set(held) <= set(names)
                if all(1 <= held[n] <= 2 for n in names):  # 4 shards, 3 instances
                    break
            assert asyncio.get_running_loop().time() < deadline, states
        assert all(w.returncode is None for w in writers)
    finally:
        for writer in writers:
            writer.kill()
            await writer.wait()
        await setup.close()
