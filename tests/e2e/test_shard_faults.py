"""Faults of several `banking-es serve` instances (one worker each, one PostgreSQL database,
one Redis), with clients sending commands to random instances and retrying each with its
Idempotency-Key until it has a final answer (tests/e2e/shard_support.py):

- a cold start of three instances at once: one owner per shard, the same in every instance's
  view, in `GET /admin/shards` and in the `shard_leases` table, and no claim of a live lease;
- one instance's database connection cut at the COMMIT of appends (before the server has it,
  and after it committed): nothing acknowledged lost, nothing doubled;
- a rolling restart of every instance under load: nothing lost or doubled, no lease lapsed,
  no shard moved back and forth;
- transfers between accounts of different owners, the source's owner killed (-9) mid-load:
  both sides of every transfer or neither, balances conserved.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tests.auth import ADMIN_PASSWORD, bearer, create_admin_cli, login
from tests.db_support import connect_database
from tests.e2e.shard_support import (
    COUNT,
    INITIAL,
    REBALANCE_INTERVAL,
    TTL,
    Claim,
    Clients,
    Sent,
    audit_claims,
    claimed,
    claims,
    cluster,  # noqa: F401
    instance,
    lease_rows,
    open_accounts,
    start_all,
    stop_all,
    verify_log,
)
from tests.pg_wire import AppendCommitCutter
from tests.redis_support import redis_prefix  # noqa: F401
from tests.server import ServerProcess
from tests.tcp_proxy import TcpProxy

from banking_es.db.migrate import migrate
from banking_es.shards.keys import shard_of

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

#: The shards an instance may hold when three share them (the fair share, 16 / 3, give or
#: take the 20% threshold, at most SHARDS_MAX_PER_INSTANCE).
BAND = range(4, 7)
#: How long a shard the rebalancer moved stays where it went, at least: three rounds.
COOLDOWN = 3 * REBALANCE_INTERVAL


async def _accounts_on_every_instance(
    http: httpx.AsyncClient, url: str, owners: dict[int, str], each: int
) -> Clients:
    """Accounts until every instance owns `each` of them."""
    instances = set(owners.values())
    clients = await open_accounts(http, url, len(instances) * each)

    def fewest() -> int:
        held = Counter(owners[shard_of(a, COUNT)] for a in clients.accounts)
        return min(held[name] for name in instances)

    while fewest() < each:
        opened = await http.post(
            "/accounts", json={"owner_name": "Bo", "initial_balance": f"{INITIAL}"},
            headers=clients.headers,
        )  # fmt: skip
        assert opened.status_code == 201, opened.text
        clients.accounts.append(opened.json()["id"])
        clients.expected[clients.accounts[-1]] = INITIAL
    return clients


async def _shared_out(http: httpx.AsyncClient, servers: list[ServerProcess]) -> dict[int, str]:
    """The map once every shard has an owner and each instance at least a fair share's
    lower bound (with even loads, no move is then due)."""
    deadline = time.monotonic() + 60
    while True:
        owners = await claimed(http, servers)
        counts = Counter(owners.values())
        shares = [counts[server.extra_env["INSTANCE_ID"]] for server in servers]
        if len(owners) == COUNT and min(shares) >= BAND.start:
            return owners
        assert time.monotonic() < deadline, f"the shards were not shared out: {owners}"
        await asyncio.sleep(0.2)


async def test_a_cold_start_of_three_instances_gives_every_shard_one_owner(
    tmp_path: Path,
    pg_url: str,
    redis_prefix: str,  # noqa: F811
) -> None:
    db = await connect_database("postgres", pg_url)
    try:
        await migrate(db)  # the tables, so that every claim is recorded from the first
    finally:
        await db.close()
    await audit_claims(pg_url)
    servers = [instance(tmp_path, pg_url, redis_prefix, index) for index in range(3)]
    try:
        with ThreadPoolExecutor(2) as pool:
            admin = pool.submit(create_admin_cli, pg_url, tmp_path)
            pool.submit(start_all, servers).result()
            assert admin.result().returncode == 0, admin.result().stderr
        async with httpx.AsyncClient(base_url=servers[0].url) as http:
            owners = await _shared_out(http, servers)  # each instance's own view, none shared
            assert set(Counter(owners.values()).values()) <= set(BAND), owners
            table = await lease_rows(pg_url)
            assert {shard: owner for shard, (owner, _) in table.items()} == owners
            headers = bearer((await login(http, "admin", ADMIN_PASSWORD))["access_token"])
            for server in servers:  # every instance reports the same map: the table's
                report = (await http.get(f"{server.url}/admin/shards", headers=headers)).json()
                assert [(s["shard"], s["status"], s["owner"], s["epoch"]) for s in report["shards"]
                        ] == [(shard, "assigned", owner, epoch)
                              for shard, (owner, epoch) in table.items()]  # fmt: skip
                held = {i["id"]: i["shards"] for i in report["instances"]}
                assert held == {
                    name: sorted(s for s, owner in owners.items() if owner == name)
                    for name in ("i0", "i1", "i2")
                }
        recorded = await claims(pg_url)
        # Each term of each shard went to one instance (the epochs 1, 2, ... once each), and
        # every claim took a free shard or one handed to it, never another's live lease.
        for shard, (_, epoch) in table.items():
            terms = [claim.epoch for claim in recorded if claim.shard == shard]
            assert terms == list(range(1, epoch + 1)), (shard, terms)
        assert {claim.kind for claim in recorded} <= {"free", "handover"}, recorded
    finally:
        stop_all(servers)


async def test_a_connection_cut_at_the_commit_of_appends_loses_and_doubles_nothing(
    tmp_path: Path,
    pg_url: str,
    redis_prefix: str,  # noqa: F811
) -> None:
    cutter = AppendCommitCutter(every=3, limit=6)
    parts = urlsplit(pg_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432, tap=cutter).start()
    through = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    # i1 reaches the database through the proxy, which runs on this test's loop.
    servers = [
        instance(tmp_path, pg_url, redis_prefix, 0),
        instance(tmp_path, through, redis_prefix, 1),
    ]
    try:
        await asyncio.to_thread(start_all, servers)
        urls = [server.url for server in servers]
        async with httpx.AsyncClient() as http:
            owners = await _shared_out(http, servers)
            clients = await _accounts_on_every_instance(http, urls[0], owners, 4)
            cut_side = [a for a in clients.accounts if owners[shard_of(a, COUNT)] == "i1"]

            async def once() -> None:  # deposits sent once: a 503 is never retried
                for index in range(20):
                    sent = Sent("deposit", cut_side[index % len(cut_side)], None, Decimal(1))
                    await clients.send(urls, sent, retry=False)

            cutter.armed = True
            await asyncio.gather(*(clients.run(urls, 30) for _ in range(4)), once())
            cutter.armed = False
            assert cutter.cuts == ["before", "after"] * 3, (cutter.cuts, cutter.commits)
            landed = await verify_log(pg_url, clients)
            await clients.check(urls[0])
        sent = list(clients.sent.values())
        # A cut before the COMMIT rolled its appends back: their clients heard an error, and
        # a retry executed them afresh (sent once, they are not in the log).
        rolled_back = [
            s
            for s in sent
            if s.errors and ((s.executed and not s.replayed) or (s.status is None and not s.landed))
        ]
        assert rolled_back
        # Each cut after the COMMIT left at least one append written whose client heard an
        # error: retried, it got the stored answer (no second execution); sent once, it is
        # in the log (once: the log was checked for doubles above).
        answered_late = [s for s in sent if s.errors and (s.replayed or s.landed)]
        assert len(answered_late) >= cutter.cuts.count("after"), (answered_late, landed)
    finally:  # on threads: i1 needs the proxy, on this loop, to stop
        await asyncio.to_thread(stop_all, servers)
        await proxy.close()


def _back_and_forth(
    start: dict[int, str | None], recorded: list[Claim], restarts: list[tuple[int, str]]
) -> list[str]:
    """The moves that sent a shard back where it came from within the rebalancing cooldown,
    but for the return of an instance that it left because that instance stopped for its
    restart. `restarts`: (the first claim id of a restart's time, the instance restarted)."""

    def restarting(claim: Claim) -> str:
        return next((name for first, name in reversed(restarts) if claim.id >= first), "")

    found = []
    for shard, owner in start.items():
        last: tuple[str | None, Claim] | None = None  # (where it came from, the move)
        for claim in (c for c in recorded if c.shard == shard):
            if last is not None and claim.owner == last[0] and claim.kind == "handover":
                origin, move = last
                left_to_restart = move.kind == "free" and origin == restarting(move)
                if not left_to_restart and claim.at - move.at < COOLDOWN:
                    found.append(f"shard {shard}: {origin} -> {owner} -> {origin}")
            if claim.owner != owner:
                last, owner = (owner, claim), claim.owner
    return found


async def test_a_rolling_restart_under_load_loses_nothing_and_moves_no_shard_back_and_forth(
    cluster: list[ServerProcess],  # noqa: F811
    pg_url: str,
) -> None:
    urls = [server.url for server in cluster]
    async with httpx.AsyncClient() as http:
        await _shared_out(http, cluster)
        clients = await open_accounts(http, urls[0], 8)
        await audit_claims(pg_url)
        start = {shard: owner for shard, (owner, _) in (await lease_rows(pg_url)).items()}
        done = asyncio.Event()
        load = [asyncio.create_task(clients.run(urls, 0, done)) for _ in range(4)]
        restarts: list[tuple[int, str]] = []
        try:
            for server in cluster:
                restarts.append((max((c.id for c in await claims(pg_url)), default=0) + 1,
                                 str(server.extra_env["INSTANCE_ID"])))  # fmt: skip
                await asyncio.to_thread(server.stop)  # SIGTERM: hands its shards over
                stopped = time.monotonic()
                starting = asyncio.create_task(asyncio.to_thread(server.start, 60))
                # Its shards are taken at the others' next step, long before it is back.
                others = [s for s in cluster if s is not server]
                while len(await claimed(http, others)) < COUNT:
                    assert time.monotonic() - stopped < TTL, "its leases were left to lapse"
                    await asyncio.sleep(0.1)
                await starting
                back = time.monotonic()
                # Back with its share before the next one stops.
                while len(await claimed(http, [server])) < BAND.start:
                    assert time.monotonic() - back < 20, "it got no share back"
                    await asyncio.sleep(0.2)
        finally:
            done.set()
            await asyncio.gather(*load)
        assert len(clients.sent) > 100
        assert await verify_log(pg_url, clients) == 0  # every command had a final answer
        await clients.check(urls[0])
        recorded = await claims(pg_url)
        # Every stop handed its shards over: no lease lapsed, none was taken from a live owner.
        assert {claim.kind for claim in recorded} <= {"free", "handover"}, recorded
        # A restart moves a shard at most twice: off the instance stopping, onto it back.
        moves = Counter(claim.shard for claim in recorded)
        assert max(moves.values()) <= 2 * len(cluster), moves
        assert _back_and_forth(start, recorded, restarts) == [], (start, restarts, recorded)


async def test_transfers_between_owners_stay_whole_when_the_source_owner_is_killed(
    cluster: list[ServerProcess],  # noqa: F811
    pg_url: str,
) -> None:
    urls = [server.url for server in cluster]
    victim = cluster[2]
    async with httpx.AsyncClient() as http:
        owners = await _shared_out(http, cluster)
        clients = await _accounts_on_every_instance(http, urls[0], owners, 3)
        owner = {a: owners[shard_of(a, COUNT)] for a in clients.accounts}
        assert set(owner.values()) == {"i0", "i1", "i2"}
        pairs = [(a, b) for a in owner for b in owner if owner[a] != owner[b]]
        from_victim = [(a, b) for a, b in pairs if owner[a] == "i2"]
        recovered = asyncio.Event()

        async def kill_soon() -> None:
            await asyncio.sleep(1.0)
            victim.kill()  # SIGKILL, transfers in flight: no handover, its leases lapse
            urls.remove(victim.url)
            killed = time.monotonic()
            while len(await claimed(http, cluster[:2])) < COUNT:
                assert time.monotonic() - killed < TTL + 5
                await asyncio.sleep(0.2)
            recovered.set()

        transfers = [clients.run(urls, 15, recovered, from_victim, ("transfer",)) for _ in range(3)]
        # Deposits and withdrawals meanwhile, on both sides of transfers, by their owners.
        mixed = [clients.run(urls, 15, recovered, pairs) for _ in range(2)]
        await asyncio.gather(kill_soon(), *transfers, *mixed)
        assert clients.retries > 0  # the kill was felt
        assert await verify_log(pg_url, clients) == 0  # both sides or neither, each once
        await clients.check(urls[0])
        executed = [s for s in clients.sent.values() if s.kind == "transfer" and s.executed]
        # Transfers of the victim's accounts ran on it before the kill and on another after.
        served = {s.served_by for s in executed if owner[s.account] == "i2"}
        assert "i2" in served, served
        assert served - {"i2"}, served
        deposits = sum(
            (s.amount if s.kind == "deposit" else -s.amount)
            for s in clients.sent.values()
            if s.kind != "transfer" and s.executed
        )
        balances = [
            Decimal((await http.get(f"{urls[0]}/accounts/{a}", headers=clients.headers)).json()[
                "balance"])
            for a in clients.accounts
        ]  # fmt: skip
        assert sum(balances) == INITIAL * len(clients.accounts) + deposits
