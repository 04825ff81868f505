"""Two instances of the service in one test process, sharding on, on one PostgreSQL database
(a pool, a cache and a shard manager each, as two `serve` processes would have), started
together and from then on stepped by hand (`ShardManager.step`), their hold expiry jobs run
by hand too (`HoldExpiry.run_once`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from tests.api_support import running_services

from banking_es.application.accounts import AccountService, CommandContext
from banking_es.bootstrap import Services
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.shards.manager import ShardManager
from banking_es.tasks import cancel

#: Long enough that leases outlive the slower steps of a test; the start waits a third.
TTL = 4.0
CTX = CommandContext()
URLS = {"a": "http://127.0.0.1:3991", "b": "http://127.0.0.1:3992"}


@asynccontextmanager
async def two_instances(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[Services, Services]]:
    """Instances `a` and `b`, each holding half of the 16 shards."""
    options = {"cluster_secret": "s" * 32, "shard_lease_ttl": TTL}
    for name in URLS:
        (tmp_path / name).mkdir()
    async with (
        running_services(tmp_path / "a", pg_url, start=False, instance_id="a",
                         instance_url=URLS["a"], **options) as a,
        running_services(tmp_path / "b", pg_url, start=False, instance_id="b",
                         instance_url=URLS["b"], **options) as b,
    ):  # fmt: skip
        await asyncio.gather(a.start(), b.start())
        for services in (a, b):
            await cancel(manager(services)._task)
            await cancel(services._expiring)
        yield a, b


def manager(services: Services) -> ShardManager:
    assert services.sharding is not None
    return services.sharding.manager


async def open_on(services: Services, owned_by: Services, exclude: Collection[int] = ()) -> str:
    """An account opened through `services` whose shard `owned_by` holds (not in `exclude`)."""
    owner = manager(owned_by)
    while True:
        opened = await services.accounts.open_account(
            cmd.OpenAccount("Ada", Decimal("100"), "USD"), CTX
        )
        assert isinstance(opened, Account)
        shard = owner.shard_of(opened.id)
        if shard in owner.owned and shard not in exclude:
            return opened.id


async def deposit(service: AccountService, account_id: str, amount: str = "1") -> Account:
    done = await service.deposit(cmd.Deposit(account_id, Decimal(amount)), CTX)
    assert isinstance(done, Account)
    return done
