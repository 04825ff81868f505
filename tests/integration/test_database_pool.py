"""`DATABASE_POOL_SIZE` bounds each process's PostgreSQL pool; a small pool still serves
concurrent commands (they wait for a connection) and refuses a size it cannot run on."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from tests.api_support import running_app
from tests.auth import sign_up

from banking_es.config import SettingsError, load_settings

pytestmark = pytest.mark.postgres


async def test_a_pool_of_two_serves_forty_concurrent_deposits(pg_url: str, tmp_path: Path) -> None:
    async with running_app(tmp_path, pg_url, database_pool_size=2) as (client, services):
        assert services.db.pool.get_max_size() == 2  # type: ignore[attr-defined]
        client.headers.update(await sign_up(client))
        accounts = []
        for name in ("Ada", "Grace", "Edsger", "Barbara"):
            opened = await client.post(
                "/accounts", json={"owner_name": name, "initial_balance": "0"}
            )
            assert opened.status_code == 201, opened.text
            accounts.append(opened.json()["id"])
        answers = await asyncio.gather(
            *(
                client.post(f"/accounts/{accounts[i % 4]}/deposit", json={"amount": "2.50"})
                for i in range(40)
            )
        )
        assert [a.status_code for a in answers] == [200] * 40, [a.text for a in answers]
        for account in accounts:
            read = await client.get(f"/accounts/{account}")
            assert Decimal(read.json()["balance"]) == Decimal("25.00")


@pytest.mark.parametrize("size", [0, 1, 1001, "many"])
def test_a_pool_size_outside_two_to_a_thousand_is_refused(size: object) -> None:
    with pytest.raises(SettingsError, match="DATABASE_POOL_SIZE"):
        load_settings(database_pool_size=size)


def test_the_pool_size_defaults_to_twenty() -> None:
    assert load_settings().database_pool_size == 20
