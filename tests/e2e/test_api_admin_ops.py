"""The operations API (API.md, "Operations"): /admin/projections, rebuild jobs, /admin/jobs,
/admin/cache, /admin/outbox, /admin/dead-letters; who may call what, and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api_support import running_services
from tests.e2e.http_support import (
    BOTH_BACKENDS,
    E2E_SETTINGS,
    StoreState,
    api_client,
    assert_problem,
    open_account,
    wait_for_projections,
)
from tests.redis_support import SHARED_REDIS_URL, redis_prefix  # noqa: F401

from banking_es.application.admin import REBUILD
from banking_es.application.jobs import STOPPED_REASON
from banking_es.bootstrap import Services
from banking_es.messaging.dead_letters import add_letter

Clients = dict[str, httpx.AsyncClient]
MISSING_JOB = "00000000-0000-4000-8000-000000000000"
REBUILD_PATH = "/admin/projections/transactions/rebuild"


@pytest.fixture
async def clients(services: Services) -> AsyncIterator[Clients]:
    """A logged-in client per role, plus one without a token."""
    async with (
        api_client(services, role="admin") as admin,
        api_client(services, role="auditor") as auditor,
        api_client(services, role="customer") as customer,
        api_client(services, authorization="none") as anonymous,
    ):
        anonymous.headers.pop("Authorization")
        yield {"admin": admin, "auditor": auditor, "customer": customer, "anonymous": anonymous}


async def finished_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(400):
        response = await client.get(f"/admin/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] != "running":
            return job
        await asyncio.sleep(0.025)
    raise AssertionError(f"job {job_id} still running")


async def add_letters(services: Services, count: int) -> list[int]:
    ids = []
    async with services.db.transaction() as conn:
        for n in range(count):
            ids.append(
                await add_letter(
                    conn,
                    consumer="projections",
                    topic="banking-es.events",
                    partition=0,
                    offset=n,
                    key=f"key-{n}",
                    value="{}",
                    headers={},
                    error="poison",
                    attempts=3,
                )
            )
    return ids


# ---- roles ------------------------------------------------------------------------------

READS = ["/admin/projections", "/admin/cache", "/admin/outbox", "/admin/dead-letters"]


async def test_admins_and_auditors_read_customers_get_403_no_token_401(
    clients: Clients,
) -> None:
    started = await clients["admin"].post("/admin/projections/transactions/rebuild", json={})
    assert started.status_code == 202, started.text
    reads = [*READS, f"/admin/jobs/{started.json()['job_id']}"]
    for path in reads:
        for role in ("admin", "auditor"):
            response = await clients[role].get(path)
            assert response.status_code == 200, (role, path, response.text)
        assert_problem(await clients["customer"].get(path), 403, "forbidden")
        assert_problem(await clients["anonymous"].get(path), 401, "unauthenticated")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/admin/projections/transactions/rebuild"),
        ("POST", "/admin/dead-letters/1/retry"),
        ("DELETE", "/admin/dead-letters/1"),
    ],
)
async def test_only_admins_write(
    clients: Clients, services: Services, method: str, path: str
) -> None:
    await add_letters(services, 1)
    for role, status, code in (
        ("auditor", 403, "forbidden"),
        ("customer", 403, "forbidden"),
        ("anonymous", 401, "unauthenticated"),
    ):
        response = await clients[role].request(method, path, json={} if "rebuild" in path else None)
        assert_problem(response, status, code)
    assert await services.db.fetchval("SELECT count(*) FROM jobs") == 0
    assert await services.db.fetchval("SELECT status FROM dead_letters") == "open"


# ---- projections and rebuild jobs -------------------------------------------------------


@pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
async def test_projections_show_checkpoint_lag_leader_and_status(
    clients: Clients, services: Services, api: httpx.AsyncClient
) -> None:
    await open_account(api)
    await wait_for_projections(services)
    head = await services.store.head_position()
    body = (await clients["auditor"].get("/admin/projections")).json()
    assert [row["name"] for row in body["data"]] == ["account_summaries", "transactions"]
    assert services.projections.leader is not None
    for row in body["data"]:
        assert row == {
            "name": row["name"],
            "checkpoint": head,
            "lag_events": 0,
            "lag_seconds": 0.0,
            "leader": services.projections.leader.holder,
            "status": "ok",
        }


@pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
async def test_a_rebuild_job_reaches_done_with_done_equal_total(
    clients: Clients, services: Services, api: httpx.AsyncClient
) -> None:
    account = await open_account(api)
    for _ in range(5):
        deposit = await api.post(f"/accounts/{account['id']}/deposit", json={"amount": "1.00"})
        assert deposit.status_code == 200, deposit.text
    await wait_for_projections(services)
    before = await services.db.fetch("SELECT id, amount FROM transactions ORDER BY id")
    head = await services.store.head_position()

    started = await clients["admin"].post("/admin/projections/transactions/rebuild", json={})
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    assert started.headers["location"] == f"/admin/jobs/{job_id}"
    job = await finished_job(clients["auditor"], job_id)
    assert job["status"] == "done", job
    assert job["kind"] == REBUILD
    assert job["done"] == job["total"] == head
    assert job["error"] is None
    assert job["finished_at"] >= job["started_at"]
    after = await services.db.fetch("SELECT id, amount FROM transactions ORDER BY id")
    assert [tuple(r.values()) for r in after] == [tuple(r.values()) for r in before]

    # By type, from a position: only those rows are replayed, the checkpoint stays.
    typed = await clients["admin"].post(
        "/admin/projections/account_summaries/rebuild",
        json={"from_position": 1, "types": ["MoneyDeposited"]},
    )
    assert typed.status_code == 202, typed.text
    job = await finished_job(clients["admin"], typed.json()["job_id"])
    assert (job["status"], job["done"]) == ("done", job["total"])
    shown = await api.get(f"/accounts/{account['id']}")
    assert shown.json()["balance"] == "105.00"


async def test_a_running_rebuild_shows_as_rebuilding_and_a_second_is_409(
    clients: Clients, services: Services
) -> None:
    release = asyncio.Event()

    async def slow(progress: Callable[[int, int], None]) -> None:
        progress(1, 2)
        await release.wait()

    job = await services.admin.jobs.start(REBUILD, "transactions", slow)
    rows = (await clients["auditor"].get("/admin/projections")).json()["data"]
    assert {r["name"]: r["status"] for r in rows} == {
        "account_summaries": "ok",
        "transactions": "rebuilding",
    }
    again = await clients["admin"].post("/admin/projections/transactions/rebuild", json={})
    assert_problem(again, 409, "rebuild_running")
    release.set()
    done = await finished_job(clients["admin"], job.id)
    assert (done["status"], done["done"], done["total"]) == ("done", 2, 2)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/admin/projections/nope/rebuild", {}, 404, "projection_not_found"),
        ("/admin/projections/" + "x" * 65 + "/rebuild", {}, 400, "validation_error"),
        (REBUILD_PATH, {"from_position": -1}, 400, "validation_error"),
        (
            "/admin/projections/transactions/rebuild",
            {"from_position": 2**63},
            400,
            "validation_error",
        ),
        (
            "/admin/projections/transactions/rebuild",
            {"from_position": 10**40},
            400,
            "validation_error",
        ),
        (
            "/admin/projections/transactions/rebuild",
            {"from_position": "1"},
            400,
            "validation_error",
        ),
        (
            "/admin/projections/transactions/rebuild",
            {"from_position": 1.5},
            400,
            "validation_error",
        ),
        (REBUILD_PATH, {"types": ["Nope"]}, 400, "validation_error"),
        (REBUILD_PATH, {"types": []}, 400, "validation_error"),
        (
            "/admin/projections/transactions/rebuild",
            {"types": "MoneyDeposited"},
            400,
            "validation_error",
        ),
        (REBUILD_PATH, {"extra": 1}, 400, "validation_error"),
        (REBUILD_PATH, [], 400, "validation_error"),
    ],
)
async def test_bad_rebuild_input_is_a_4xx_and_starts_nothing(
    clients: Clients,
    services: Services,
    store_state: Callable[[], Awaitable[StoreState]],
    path: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    before = await store_state()
    response = await clients["admin"].post(path, json=body)
    assert_problem(response, status, code)
    assert await services.db.fetchval("SELECT count(*) FROM jobs") == 0
    assert await store_state() == before


async def test_a_rebuild_body_that_is_not_json_is_refused(clients: Clients) -> None:
    response = await clients["admin"].post(
        "/admin/projections/transactions/rebuild",
        content=b"from_position=1",
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(response, 415, "unsupported_media_type")
    broken = await clients["admin"].post(
        "/admin/projections/transactions/rebuild",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= broken.status_code < 500, broken.text


@pytest.mark.parametrize(
    ("job_id", "status", "code"),
    [
        (MISSING_JOB, 404, "job_not_found"),
        ("not-a-uuid", 400, "validation_error"),
        ("9" * 200, 400, "validation_error"),
        ("%00", 400, "validation_error"),
    ],
)
async def test_an_unknown_or_malformed_job_id(
    clients: Clients, job_id: str, status: int, code: str
) -> None:
    assert_problem(await clients["auditor"].get(f"/admin/jobs/{job_id}"), status, code)


# ---- jobs across a restart --------------------------------------------------------------


@pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
async def test_a_job_running_when_the_server_stops_is_failed_after_the_restart(
    api_database_url: str, tmp_path: Path
) -> None:
    async with running_services(tmp_path, api_database_url, **E2E_SETTINGS) as first:

        async def forever(progress: Callable[[int, int], None]) -> None:
            progress(3, 10)
            await asyncio.Event().wait()

        job = await first.admin.jobs.start(REBUILD, "transactions", forever)
    async with (
        running_services(tmp_path, api_database_url, **E2E_SETTINGS) as second,
        api_client(second, role="auditor") as auditor,
    ):
        response = await auditor.get(f"/admin/jobs/{job.id}")
        assert response.status_code == 200, response.text
        shown = response.json()
        assert shown["status"] == "failed"
        assert shown["error"] == STOPPED_REASON
        assert (shown["done"], shown["total"]) == (3, 10)
        assert shown["finished_at"] is not None


@pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
async def test_a_job_whose_process_died_is_failed_when_read(
    clients: Clients, services: Services
) -> None:
    """A process killed mid-job leaves a `running` row with a stale heartbeat; the next
    look (here another instance's read) fails it with the reason."""
    job_id = "11111111-1111-4111-8111-111111111111"
    await services.db.execute(
        "INSERT INTO jobs (id, kind, subject, status, done, total, owner, started_at,"
        " heartbeat_at) VALUES ($1, $2, 'transactions', 'running', 5, 9, 'gone:1:dead', $3, $3)",
        job_id,
        REBUILD,
        services.clock.now().replace(year=2020),
    )
    shown = (await clients["auditor"].get(f"/admin/jobs/{job_id}")).json()
    assert shown["status"] == "failed", shown
    assert "no heartbeat" in shown["error"]
    rows = (await clients["auditor"].get("/admin/projections")).json()["data"]
    assert all(r["status"] != "rebuilding" for r in rows)


# ---- cache and outbox -------------------------------------------------------------------


async def test_cache_counts_l1_and_no_l2_without_redis(
    clients: Clients, api: httpx.AsyncClient
) -> None:
    account = await open_account(api)
    for _ in range(3):
        assert (await api.get(f"/accounts/{account['id']}")).status_code == 200
    body = (await clients["auditor"].get("/admin/cache")).json()
    assert set(body) == {"l1", "l2", "hit_ratio"}
    l1 = body["l1"]
    assert set(l1) == {"entries", "hits", "misses", "evictions", "approx_bytes"}
    assert l1["entries"] >= 1
    assert l1["hits"] >= 3
    assert l1["approx_bytes"] > 0
    assert body["l2"] is None
    assert 0 < body["hit_ratio"] <= 1


async def test_cache_shows_l2_with_redis(
    tmp_path: Path,
    redis_prefix: str,  # noqa: F811
) -> None:
    async with (
        running_services(
            tmp_path, redis_url=SHARED_REDIS_URL, redis_key_prefix=redis_prefix
        ) as services,
        api_client(services, role="admin") as admin,
    ):
        body = (await admin.get("/admin/cache")).json()
    l2 = body["l2"]
    assert l2 is not None
    assert l2["available"] is True
    assert isinstance(l2["entries"], int)
    assert l2["approx_bytes"] > 0
    assert isinstance(l2["evictions"], int)
    assert l2["hits"] >= 0


@pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
async def test_outbox_shows_backlog_age_and_relay_leader(
    clients: Clients, services: Services, api: httpx.AsyncClient
) -> None:
    await open_account(api)
    body: dict[str, Any] = {}
    for _ in range(200):
        body = (await clients["auditor"].get("/admin/outbox")).json()
        if body["backlog"] == 0 and body["relay_leader"] is not None:
            break
        await asyncio.sleep(0.025)
    assert body == {
        "backlog": 0,
        "oldest_age_seconds": 0.0,
        "relay_leader": services.relay.leader.holder if services.relay.leader else None,
    }
    assert body["relay_leader"] is not None


# ---- dead letters -----------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
async def test_dead_letters_are_a_page_with_a_cursor(clients: Clients, services: Services) -> None:
    ids = await add_letters(services, 3)
    first = await clients["auditor"].get("/admin/dead-letters", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert set(page) == {"data", "has_more", "next_cursor"}
    assert [letter["id"] for letter in page["data"]] == ids[:2]
    assert page["has_more"] is True
    rest = await clients["auditor"].get(
        "/admin/dead-letters", params={"limit": 2, "cursor": page["next_cursor"]}
    )
    assert rest.json() == {
        "data": [rest.json()["data"][0]],
        "has_more": False,
        "next_cursor": None,
    }
    assert rest.json()["data"][0]["id"] == ids[2]

    discarded = await clients["admin"].delete(f"/admin/dead-letters/{ids[0]}")
    assert discarded.status_code == 200, discarded.text
    still_open = (await clients["admin"].get("/admin/dead-letters")).json()["data"]
    assert [letter["id"] for letter in still_open] == ids[1:]
    every = await clients["admin"].get("/admin/dead-letters", params={"status": "all"})
    assert [letter["id"] for letter in every.json()["data"]] == ids


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "garbage!"},
        {"cursor": "YTox"},  # "a:1": another list's cursor
        {"cursor": "ZDo5OTk5OTk5OTk5OTk5OTk5OTk5OTk"},  # "d:" beyond bigint
        {"cursor": "x" * 65},
    ],
)
async def test_a_bad_dead_letter_cursor_is_a_400(clients: Clients, params: dict[str, str]) -> None:
    response = await clients["admin"].get("/admin/dead-letters", params=params)
    code = "validation_error" if len(params["cursor"]) > 64 else "invalid_cursor"
    assert_problem(response, 400, code)


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"status": "nope"}]
)
async def test_bad_dead_letter_paging_is_a_400(clients: Clients, params: dict[str, str]) -> None:
    assert_problem(
        await clients["admin"].get("/admin/dead-letters", params=params), 400, "validation_error"
    )


async def test_mail_dead_letters_are_a_page_for_readers_403_for_customers(
    clients: Clients,
) -> None:
    listed = await clients["auditor"].get("/admin/mail/dead-letters", params={"limit": 5})
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"data": [], "has_more": False, "next_cursor": None}
    assert_problem(await clients["customer"].get("/admin/mail/dead-letters"), 403, "forbidden")
    bad = await clients["admin"].get("/admin/mail/dead-letters", params={"cursor": "ZDox"})
    assert_problem(bad, 400, "invalid_cursor")  # a dead letter's cursor, not a mail's
