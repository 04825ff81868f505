"""Row 8: two instances (`banking-es serve`, one worker each, sharding on: each its own
`INSTANCE_URL`, one `CLUSTER_SECRET`, one database) behind no proxy, wrk's two threads one on
each: deposits to 1,000 accounts and to one hot account, with the version conflicts of both
instances (`banking_es_commands_total{outcome="conflict"}`) counted over the measured run."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from banking_es.shards.keys import shard_of
from bench.common import conflicts_per_thousand, say
from bench.http import (
    ACCOUNTS,
    CACHE_WARMUP_S,
    Server,
    authenticate,
    check_balances,
    measure,
    open_accounts,
    run_wrk,
    worker_pids,
)

NAMES = ("bench-a", "bench-b")
CLUSTER_SECRET = "bench-cluster-" + "z" * 32
#: How long the two may take to split the shards between them after starting.
SETTLE_S = 60
_COMMANDS = re.compile(r'^banking_es_commands_total\{.*outcome="([^"]+)".*\} (\S+)$', re.M)


def _instance(database_url: str, workdir: Path, name: str) -> Server:
    workdir.mkdir()
    server = Server(database_url, workdir, workers=1)
    server.extra_env = {
        "INSTANCE_ID": name,
        "INSTANCE_URL": server.url,
        "CLUSTER_SECRET": CLUSTER_SECRET,
    }
    return server


def commands_by_outcome(urls: list[str]) -> dict[str, float]:
    """Commands executed so far by outcome (ok, rejected, conflict, failed), summed over
    every instance's `/metrics`; a conflict counts each command of a chunk that lost one."""
    totals: dict[str, float] = {}
    for url in urls:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        for outcome, value in _COMMANDS.findall(text):
            totals[outcome] = totals.get(outcome, 0.0) + float(value)
    return totals


async def _settled(client: httpx.AsyncClient, servers: list[Server]) -> dict[str, list[int]]:
    """instance -> its shards, once every shard has an owner, each instance some, and the map
    is the same two looks in a row (the `shards` component of `/health/ready`)."""
    deadline = time.monotonic() + SETTLE_S
    last: dict[str, list[int]] = {}
    while time.monotonic() < deadline:
        owned: dict[str, list[int]] = {}
        unowned = False
        for server in servers:
            shards = (await client.get(f"{server.url}/health/ready")).json()["components"]["shards"]
            owned[shards["instance"]] = shards["owned"]
            unowned = unowned or bool(shards["unowned"])
        if not unowned and all(owned.values()) and owned == last:
            return owned
        last = owned
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the two instances did not split the shards in {SETTLE_S}s: {last}")


async def two_instances_row(database_url: str) -> dict[str, Any]:
    """Row 8 (module docstring), with the shard map and the hot account's owner."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="bench-instances-") as tmp:
        servers = [_instance(database_url, Path(tmp) / name, name) for name in NAMES]
        try:
            say(f"row 8: starting two instances, one worker each, on {[s.url for s in servers]}")
            # Started together, as a cluster's cold start: each claims its share at its first
            # step (a later joiner would wait for a rebalancing round).
            await asyncio.gather(*(loop.run_in_executor(None, s.start) for s in servers))
            async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as client:
                owned = await _settled(client, servers)
                say("row 8: shards " + ", ".join(f"{k} {len(v)}" for k, v in owned.items()))
                token = await authenticate(client)
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                say(f"row 8: opening {ACCOUNTS + 1} accounts")
                ids = await open_accounts(client, ACCOUNTS + 1, headers)
            hot, spread = ids[:1], ids[1:]
            count = sum(len(v) for v in owned.values())
            hot_owner = next(k for k, v in owned.items() if shard_of(hot[0], count) in v)
            url, ports = servers[0].url, [s.port for s in servers]
            urls = [s.url for s in servers]
            workers = [p for s in servers if s.process for p in worker_pids(s.process.pid)]

            def run(mode: str, accounts: list[str], label: str) -> dict[str, Any]:
                return measure(
                    url, "/", mode, accounts, token, label, workers, ports,
                    lambda: commands_by_outcome(urls),
                )  # fmt: skip

            say(f"row 8: warming both instances' caches, {CACHE_WARMUP_S}s of GET")
            await loop.run_in_executor(
                None, lambda: run_wrk(url, "/", "get", ids, token, CACHE_WARMUP_S, ports=ports)
            )
            rows: dict[str, Any] = {
                "deposits": await loop.run_in_executor(
                    None, run, "deposit", spread, "row 8 two instances, deposits, 1,000 accounts"
                ),
                "contention": await loop.run_in_executor(
                    None, run, "deposit", hot, "row 8 two instances, deposits, one account"
                ),
            }
            for name in ("deposits", "contention"):
                row = rows[name]
                seconds = row["duration_us"] / 1e6
                # What each wrk thread sent (its instance's share, a few in flight included).
                row["per_instance"] = {
                    k: sent / seconds for k, sent in zip(NAMES, row["sent_per_thread"], strict=True)
                }
                per = conflicts_per_thousand(row["counted"])
                say(f"row 8 {name}: {per:.2f} version conflicts per 1,000 commands")
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                rows["check"] = await check_balances(client, hot, headers, rows)
            rows["shards"] = {name: len(shards) for name, shards in owned.items()}
            rows["hot_owner"] = hot_owner
        finally:
            for server in servers:
                server.stop()
    return rows
