"""Helpers of the tests of several `banking-es serve` instances (tests/e2e/test_shard_*.py):
instances sharing one PostgreSQL database and one Redis, the shard map as they report it,
clients that send commands to random instances and retry each (same Idempotency-Key) until it
has a final answer, and `verify_log`, which holds the event log to those answers: every
acknowledged write in it exactly once, nothing refused or unknown in it, a transfer's two
sides together, each account's versions contiguous.

`cluster` and `still_cluster` are fixtures: import them, and `redis_prefix`
(tests/redis_support.py) that they use, into the test module.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from tests.auth import sign_up
from tests.redis_support import SHARED_REDIS_URL
from tests.server import ServerProcess

from banking_es.shards.keys import shard_of

TTL = 2.0
COUNT = 16
INITIAL = Decimal("1000.00")
#: The instances' SHARD_REBALANCE_INTERVAL (seconds).
REBALANCE_INTERVAL = 1.0


def instance(
    tmp_path: Path, pg_url: str, prefix: str, index: int, ttl: float = TTL, threshold: float = 0.2
) -> ServerProcess:
    """Instance `i{index}` on `pg_url` (the database, or a proxy in front of it); `threshold`
    its SHARD_REBALANCE_THRESHOLD (5: moves by shard counts only, never by load)."""
    workdir = tmp_path / f"i{index}"
    workdir.mkdir()
    server = ServerProcess(
        pg_url, workers=1, workdir=workdir, INSTANCE_ID=f"i{index}",
        CLUSTER_SECRET="c" * 32, JWT_SECRET="j" * 32, REFRESH_TOKEN_SECRET="r" * 32,
        SHARD_LEASE_TTL=str(ttl), SHARD_REBALANCE_INTERVAL=str(REBALANCE_INTERVAL),
        SHARD_COUNT=str(COUNT), SHARDS_MAX_PER_INSTANCE="6", REDIS_URL=SHARED_REDIS_URL,
        REDIS_KEY_PREFIX=prefix, SHARD_REBALANCE_THRESHOLD=str(threshold),
    )  # fmt: skip
    server.extra_env["INSTANCE_URL"] = server.url
    return server


def start_all(servers: list[ServerProcess]) -> None:
    """Start every instance at once (a cold start); blocking."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda s: s.start(timeout=60), servers))


def stop_all(servers: list[ServerProcess]) -> None:
    """Stop every instance (SIGTERM), all at once; blocking."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda s: s.stop(), servers))


def _cluster(
    tmp_path: Path, pg_url: str, prefix: str, threshold: float = 0.2
) -> Iterator[list[ServerProcess]]:
    servers = [instance(tmp_path, pg_url, prefix, index, threshold=threshold) for index in range(3)]
    try:
        start_all(servers)
        yield servers
    finally:
        stop_all(servers)


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[list[ServerProcess]]:
    """Three instances started at once, rebalancing every second (joins, and the loads of
    the commands); stopped after the test."""
    yield from _cluster(tmp_path, pg_url, redis_prefix)


@pytest.fixture
def still_cluster(tmp_path: Path, pg_url: str, redis_prefix: str) -> Iterator[list[ServerProcess]]:
    """Three instances that rebalance by shard counts only: the loads of the commands would
    move shards under the clients otherwise (each move a moment of 503s). Loads never differ
    by 5 times their mean among three instances."""
    yield from _cluster(tmp_path, pg_url, redis_prefix, threshold=5)


async def claimed(http: httpx.AsyncClient, servers: list[ServerProcess]) -> dict[int, str]:
    """shard -> the instance that says it owns it; every shard claimed by at most one."""
    found: dict[int, str] = {}
    for server in servers:
        body = (await http.get(f"{server.url}/health/ready", timeout=5)).json()
        shards = body["components"]["shards"]
        for shard in shards.get("owned", ()):  # none while it cannot reach the database
            assert shard not in found, f"shard {shard} owned twice"
            found[shard] = shards["instance"]
    return found


async def settled(http: httpx.AsyncClient, servers: list[ServerProcess]) -> dict[int, str]:
    """The map once every shard has an owner, every instance some, and nothing moved for
    two looks in a row."""
    deadline = time.monotonic() + 60
    last: dict[int, str] = {}
    while time.monotonic() < deadline:
        found = await claimed(http, servers)
        if len(found) == COUNT and len(set(found.values())) == len(servers) and found == last:
            return found
        last = found
        await asyncio.sleep(1.5)
    raise AssertionError(f"the shard map did not settle: {last}")


@dataclass
class Sent:
    """A command the clients sent, and what became of it."""

    kind: str  # "deposit", "withdraw" or "transfer"
    account: str  # a transfer's source
    other: str | None  # a transfer's destination
    amount: Decimal
    #: The final answer's status; None: the command had none (given up, or never retried).
    status: int | None = None
    #: 503s and broken connections before the final answer.
    errors: int = 0
    #: The final answer was the stored outcome of an earlier attempt (Idempotent-Replayed).
    replayed: bool = False
    served_by: str | None = None
    #: Without a final answer, yet in the log (`verify_log` says).
    landed: bool = False

    @property
    def executed(self) -> bool:
        return self.status in (200, 201)

    def effects(self) -> dict[str, Decimal]:
        """How the command changes balances, if it was executed."""
        if self.kind == "transfer":
            assert self.other is not None
            return {self.account: -self.amount, self.other: self.amount}
        return {self.account: self.amount if self.kind == "deposit" else -self.amount}


@dataclass
class Clients:
    """Commands to random instances, each retried (same Idempotency-Key) until it has a final
    answer; the balances the final answers imply. Each command's key is also its
    `description`, so its events can be found in the log."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    accounts: list[str]
    expected: dict[str, Decimal] = field(init=False)
    answers: list[httpx.Response] = field(default_factory=list)
    #: By key (= description) every command `run` sent.
    sent: dict[str, Sent] = field(default_factory=dict)
    retries: int = 0

    def __post_init__(self) -> None:
        self.expected = dict.fromkeys(self.accounts, INITIAL)

    async def command(
        self,
        urls: list[str],
        path: str,
        body: dict[str, Any],
        key: str | None = None,
        *,
        retry: bool = True,
    ) -> httpx.Response | None:
        """The final answer (200, 201 or 422; None when `retry` is off and the only answer
        was a 503 or a broken connection)."""
        headers = {"Idempotency-Key": key or uuid.uuid4().hex, **self.headers}
        sent = self.sent.get(headers["Idempotency-Key"])
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = await self.http.post(
                    random.choice(urls) + path, json=body, headers=headers, timeout=15
                )
                # 409 in flight: the instance that took the key died with it (the key's
                # pending mark lapses after the retry budget); 503: the shard is moving.
                code = answer.json().get("code") if answer.status_code == 409 else None
                busy = code == "idempotency_in_flight"
                if answer.status_code == 503:
                    assert answer.headers.get("retry-after"), answer.headers
                elif not busy:
                    assert answer.status_code in (200, 201, 422), answer.text
                    self.answers.append(answer)
                    if sent is not None:
                        sent.status = answer.status_code
                        sent.replayed = answer.headers.get("idempotent-replayed") == "true"
                        sent.served_by = answer.headers.get("x-served-by")
                    return answer
            except httpx.TransportError:
                pass  # that instance is gone: another one
            if sent is not None:
                sent.errors += 1
            if not retry:
                return None
            self.retries += 1
            assert time.monotonic() < deadline, f"no final answer for {path}"
            await asyncio.sleep(0.2)

    async def send(self, urls: list[str], sent: Sent, *, retry: bool = True) -> None:
        """Send one command; its expected effects counted once it is acknowledged."""
        key = uuid.uuid4().hex
        self.sent[key] = sent
        amount = f"{sent.amount}"
        if sent.kind == "transfer":
            body = {"from_account_id": sent.account, "to_account_id": sent.other,
                    "amount": amount, "description": key}  # fmt: skip
            path = "/transfers"
        else:
            body = {"amount": amount, "description": key}
            path = f"/accounts/{sent.account}/{sent.kind}"
        await self.command(urls, path, body, key, retry=retry)
        if sent.executed:
            for account, change in sent.effects().items():
                self.expected[account] += change

    async def run(
        self,
        urls: list[str],
        count: int,
        until: asyncio.Event | None = None,
        pairs: list[tuple[str, str]] | None = None,
        kinds: tuple[str, ...] = ("deposit", "withdraw", "transfer"),
    ) -> None:
        """`count` random commands of `kinds` (transfers between `pairs` when given), then
        more until `until` is set (when given)."""
        done = 0
        while done < count or (until is not None and not until.is_set()):
            done += 1
            account, other = random.choice(pairs) if pairs else random.sample(self.accounts, 2)
            kind = random.choice(kinds)
            sent = Sent(kind, account, other if kind == "transfer" else None,
                        Decimal(random.randint(1, 20)))  # fmt: skip
            await self.send(urls, sent)

    async def check(self, url: str) -> None:
        """Every account at its expected balance, its versions 1..n without a gap."""
        for account in self.accounts:
            state = (await self.http.get(f"{url}/accounts/{account}", headers=self.headers)).json()
            assert Decimal(state["balance"]) == self.expected[account], account
            versions: list[int] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                page = (
                    await self.http.get(
                        f"{url}/accounts/{account}/events", params=params, headers=self.headers
                    )
                ).json()
                versions += [event["version"] for event in page["data"]]
                if not page["has_more"]:
                    break
                cursor = page["next_cursor"]
            assert versions == list(range(1, state["version"] + 1)), account


async def open_accounts(
    http: httpx.AsyncClient, url: str, count: int, owners: dict[int, str] | None = None
) -> Clients:
    """A new customer with `count` accounts of INITIAL each, opened at `url`, and more until
    each instance of `owners` (shard -> instance) owns the shard of one."""
    http.base_url = httpx.URL(url)
    headers = await sign_up(http)
    accounts: list[str] = []
    shard_owners = owners or {}

    def every_instance_has_one() -> bool:
        held = {shard_owners.get(shard_of(a, COUNT)) for a in accounts}
        return set(shard_owners.values()) <= held

    while len(accounts) < count or not every_instance_has_one():
        opened = await http.post(
            "/accounts", json={"owner_name": "Ann", "initial_balance": f"{INITIAL}"},
            headers=headers,
        )  # fmt: skip
        assert opened.status_code == 201, opened.text
        accounts.append(opened.json()["id"])
    return Clients(http, headers, accounts)


async def verify_log(pg_url: str, clients: Clients) -> int:
    """The accounts' events in the database against the commands' answers: each acknowledged
    command's events there exactly once, a refused one's not at all, one without a final
    answer's at most once (its effects then added to `clients.expected`); no event of a
    command nobody sent; each transfer's two sides both there or neither; versions 1..n.
    Returns how many commands without a final answer landed."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT stream_id, version, type, data FROM events"
            " WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, version",
            clients.accounts,
        )
    finally:
        await conn.close()
    versions: dict[str, list[int]] = {account: [] for account in clients.accounts}
    found: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for row in rows:
        versions[row["stream_id"]].append(row["version"])
        data = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        if row["type"] != "AccountCreated" and data.get("description") is not None:
            found.setdefault(data["description"], []).append((row["stream_id"], row["type"], data))
    for account, numbers in versions.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{account}: versions {numbers}"
    assert not found.keys() - clients.sent.keys(), "events of commands nobody sent"
    landed = 0
    for key, sent in clients.sent.items():
        events = found.get(key, [])
        if sent.kind == "transfer":
            expected = [(sent.account, "TransferSent"), (sent.other, "TransferReceived")]
            if events:  # both sides, once each, of one transfer
                assert sorted((s, t) for s, t, _ in events) == sorted(expected), (key, events)
                assert len({data["transfer_id"] for _, _, data in events}) == 1, (key, events)
        else:
            kind = "MoneyDeposited" if sent.kind == "deposit" else "MoneyWithdrawn"
            expected = [(sent.account, kind)]
            if events:
                assert [(s, t) for s, t, _ in events] == expected, (key, events)
        assert all(Decimal(data["amount"]) == sent.amount for _, _, data in events), key
        if sent.executed:
            assert events, f"acknowledged {sent} is not in the log"
        elif sent.status is not None:
            assert not events, f"refused {sent} is in the log"
        elif events:
            sent.landed = True
            landed += 1
            for account, change in sent.effects().items():
                clients.expected[account] += change
    return landed


# ---- who owned which shard when -------------------------------------------------------------

_AUDIT = """
CREATE SCHEMA test_audit;
CREATE TABLE test_audit.lease_claims (
    id    bigserial PRIMARY KEY,
    shard integer NOT NULL,
    epoch bigint NOT NULL,
    owner text NOT NULL,
    kind  text NOT NULL,
    at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION test_audit.record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_audit.lease_claims (shard, epoch, owner, kind) VALUES (
        NEW.shard, NEW.epoch, NEW.owner,
        CASE WHEN OLD.owner IS NULL AND OLD.handover_to = NEW.owner THEN 'handover'
             WHEN OLD.owner IS NULL AND OLD.handover_to IS NULL THEN 'free'
             WHEN OLD.owner = NEW.owner THEN 'again'
             WHEN OLD.expires_at > now() THEN 'stolen'
             ELSE 'taken' END);
    RETURN NULL;
END $$;
CREATE TRIGGER test_audit_claims AFTER UPDATE ON shard_leases FOR EACH ROW
    WHEN (NEW.epoch <> OLD.epoch) EXECUTE FUNCTION test_audit.record_claim();
"""


@dataclass(frozen=True)
class Claim:
    """A new term of a shard's lease: who took it, and from what. `kind`: `free` (released,
    or never held), `handover` (released by a move for this owner), `taken` (from a lapsed
    lease, or a lapsed move), `stolen` (from another's live lease: never right), `again` (by
    its owner, in a new term)."""

    id: int
    shard: int
    epoch: int
    owner: str
    kind: str
    at: float  # the database's clock, seconds since the epoch


async def audit_claims(pg_url: str) -> None:
    """From now on, record every claim of a shard's lease (a trigger on `shard_leases`, in
    a schema of the test's own); the tables must exist."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(_AUDIT)
    finally:
        await conn.close()


async def claims(pg_url: str) -> list[Claim]:
    """The claims recorded since `audit_claims`, oldest first."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT id, shard, epoch, owner, kind, extract(epoch FROM at)::float8 AS at"
            " FROM test_audit.lease_claims ORDER BY id"
        )
    finally:
        await conn.close()
    return [Claim(**dict(row)) for row in rows]


async def lease_rows(pg_url: str) -> dict[int, tuple[str | None, int]]:
    """shard -> (owner, epoch), as the `shard_leases` table has them now."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT shard, owner, epoch FROM shard_leases ORDER BY shard")
    finally:
        await conn.close()
    return {row["shard"]: (row["owner"], int(row["epoch"])) for row in rows}
