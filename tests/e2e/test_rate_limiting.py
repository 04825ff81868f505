"""Rate limits through the HTTP API, with a fake clock (no sleeping through minutes).

`/accounts` needs a bearer token: each test signs its customer up first (`signed_up`) and then
moves the clock past every window, so the limits it checks start empty as they did before.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import limits.aio.storage.redis.redispy
import pytest
from tests.api_support import running_app
from tests.auth import Headers, bearer, login, register
from tests.clock_support import FakeClock
from tests.redis_support import SHARED_REDIS_URL, redis_prefix  # noqa: F401

from banking_es.bootstrap import Overrides


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(limits.aio.storage.redis.redispy, "time", clock)
    return clock


def clocked(clock: FakeClock) -> Overrides:
    """The rate limiter counts its windows on `clock`."""
    return Overrides(rate_limit_clock=clock.time)


LIMITS = {"rate_limit_enabled": True, "rate_limit_burst": 0}
#: Longer than every window (a minute): what was counted before has left them all.
PAST_THE_WINDOWS = 61


async def signed_up(http: httpx.AsyncClient, clock: FakeClock | None = None) -> Headers:
    """A new customer's Authorization header. `/auth/register` and `/auth/login` count against
    the per-IP limit (login against the auth limit too), so with a `clock` it moves past every
    window after each of them: sign-up works under a limit of one, and leaves nothing behind."""
    user = await register(http)
    if clock is not None:
        clock.advance(PAST_THE_WINDOWS)
    headers = bearer((await login(http, user["username"]))["access_token"])
    if clock is not None:
        clock.advance(PAST_THE_WINDOWS)
    return headers


async def test_a_client_over_its_limit_gets_429_with_retry_after_until_the_window_moves(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    async with running_app(
        tmp_path, **LIMITS, rate_limit_per_minute=3, parts=clocked(fake_time)
    ) as (http, services):
        http.headers.update(await signed_up(http, fake_time))
        a = {"x-client-id": "app-a"}
        for _ in range(3):
            assert (await http.get("/accounts", headers=a)).status_code == 200
            fake_time.advance(10)
        refused = await http.get("/accounts", headers=a)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        body = refused.json()
        assert body["code"] == "rate_limited"
        assert body["status"] == 429
        assert "rate limit" in body["error"]
        # the oldest of the three requests leaves the window 60 s after it was made, that is
        # 30 s from now; at exactly 30 s `limits` still counts it (its moving window keeps an
        # entry made `>=` 60 s ago), so the first second that surely passes is the 31st
        assert refused.headers["retry-after"] == "31"
        assert refused.headers["ratelimit-limit"] == "3"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-reset"] == "31"
        assert refused.headers["x-request-id"]
        other = await http.get("/accounts", headers={"x-client-id": "app-b"})
        assert other.status_code == 429  # the user's window, whatever the client id
        fake_time.advance(int(refused.headers["retry-after"]))  # a client that obeys it
        assert (await http.get("/accounts", headers=a)).status_code == 200
        assert services.metrics.count(services.metrics.rate_limited, "client") == 2


async def test_a_new_client_id_per_request_does_not_escape_the_user_limit(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    async with running_app(
        tmp_path, **LIMITS, rate_limit_per_minute=3, parts=clocked(fake_time)
    ) as (http, _services):
        http.headers.update(await signed_up(http, fake_time))
        codes = [
            (await http.get("/accounts", headers={"x-client-id": f"new-{i}"})).status_code
            for i in range(6)
        ]
        assert codes == [200, 200, 200, 429, 429, 429]


async def test_a_client_id_cannot_spend_another_users_quota(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    """Bob sends the id Ada's application uses until he is refused: Ada's windows (her user's
    and her user-and-client one) are untouched."""
    settings = {**LIMITS, "rate_limit_per_minute": 3, "rate_limit_per_client_per_minute": 2}
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, _services):
        ada = {**await signed_up(http, fake_time), "x-client-id": "ada-app"}
        bob = {**await signed_up(http, fake_time), "x-client-id": "ada-app"}
        codes = [(await http.get("/accounts", headers=bob)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        codes = [(await http.get("/accounts", headers=ada)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


async def test_a_client_id_adds_a_window_of_its_own_within_the_users(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    settings = {**LIMITS, "rate_limit_per_minute": 4, "rate_limit_per_client_per_minute": 2}
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, services):
        http.headers.update(await signed_up(http, fake_time))
        a, b = {"x-client-id": "app-a"}, {"x-client-id": "app-b"}
        codes = [(await http.get("/accounts", headers=a)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]  # app-a's window (2); the user's counted 3
        assert services.metrics.count(services.metrics.rate_limited, "client_id") == 1
        # app-b's window is empty, but the user's has room for one more request only
        codes = [(await http.get("/accounts", headers=b)).status_code for _ in range(2)]
        assert codes == [200, 429]
        assert services.metrics.count(services.metrics.rate_limited, "client") == 1


async def test_the_window_moves_rather_than_resetting_each_minute(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    async with running_app(
        tmp_path, **LIMITS, rate_limit_per_minute=2, parts=clocked(fake_time)
    ) as (http, _services):
        http.headers.update(await signed_up(http, fake_time))
        a = {"x-client-id": "app-a"}
        assert (await http.get("/accounts", headers=a)).status_code == 200
        fake_time.advance(50)
        assert (await http.get("/accounts", headers=a)).status_code == 200
        fake_time.advance(20)  # 70 s: the first left the window, the second did not
        assert (await http.get("/accounts", headers=a)).status_code == 200
        assert (await http.get("/accounts", headers=a)).status_code == 429


async def test_a_burst_is_limited_per_second(tmp_path: Path, fake_time: FakeClock) -> None:
    settings = {**LIMITS, "rate_limit_burst": 2, "rate_limit_per_minute": 100}
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, services):
        http.headers.update(await signed_up(http, fake_time))
        a = {"x-client-id": "app-a"}
        assert [(await http.get("/accounts", headers=a)).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        assert services.metrics.count(services.metrics.rate_limited, "burst") == 1
        fake_time.advance(1.1)
        assert (await http.get("/accounts", headers=a)).status_code == 200


async def test_without_a_client_id_the_user_is_the_client(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    """API.md: without `x-client-id` the caller is limited by user (then by IP, which only an
    unauthenticated caller would be, and those are refused with 401 before the limit)."""
    async with running_app(
        tmp_path, **LIMITS, rate_limit_per_minute=2, parts=clocked(fake_time)
    ) as (http, _services):
        ada = await signed_up(http, fake_time)
        bob = await signed_up(http, fake_time)
        codes = [(await http.get("/accounts", headers=ada)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        # the same IP, another user: a window of its own
        assert (await http.get("/accounts", headers=bob)).status_code == 200


async def test_the_per_ip_limit_covers_every_client_of_that_ip(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    settings = {**LIMITS, "rate_limit_per_minute": 100, "rate_limit_per_ip_per_minute": 4}
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, services):
        http.headers.update(await signed_up(http, fake_time))
        codes = [
            (await http.get("/accounts", headers={"x-client-id": f"c{i}"})).status_code
            for i in range(5)
        ]
        assert codes == [200, 200, 200, 200, 429]
        assert services.metrics.count(services.metrics.rate_limited, "ip") == 1


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    settings = {**LIMITS, "rate_limit_per_ip_per_minute": 1, "trusted_proxies": "10.0.0.0/8"}
    async with running_app(
        tmp_path, client=("10.1.2.3", 4000), **settings, parts=clocked(fake_time)
    ) as (http, _):
        http.headers.update(await signed_up(http, fake_time))  # as the proxy 10.1.2.3 itself
        for ip in ("1.1.1.1", "2.2.2.2"):
            forwarded = {"x-forwarded-for": f"9.9.9.9, {ip}, 10.0.0.7", "x-client-id": ip}
            assert (await http.get("/accounts", headers=forwarded)).status_code == 200
        again = {"x-forwarded-for": "1.1.1.1", "x-client-id": "x"}
        assert (await http.get("/accounts", headers=again)).status_code == 429
    async with running_app(
        tmp_path, f"sqlite:///{tmp_path / 'b.db'}", **settings, parts=clocked(fake_time)
    ) as (
        http,
        _services,
    ):
        # the peer 127.0.0.1 is not trusted: XFF is ignored
        http.headers.update(await signed_up(http, fake_time))
        for ip, expected in (("1.1.1.1", 200), ("2.2.2.2", 429)):
            forwarded = {"x-forwarded-for": ip, "x-client-id": ip}
            assert (await http.get("/accounts", headers=forwarded)).status_code == expected


async def test_login_and_password_reset_have_their_own_per_ip_limit(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    settings = {**LIMITS, "auth_rate_limit_per_minute": 2, "rate_limit_per_minute": 100}
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, services):
        customer = await signed_up(http, fake_time)  # its login has left the auth window
        codes = [(await http.post("/auth/login", json={})).status_code for _ in range(2)]
        assert 429 not in codes
        assert (await http.post("/auth/reset-password", json={})).status_code == 429
        other_path = await http.get("/accounts", headers=customer)
        assert other_path.status_code == 200  # other paths unaffected
        assert services.metrics.count(services.metrics.rate_limited, "auth") == 1


async def test_registration_is_under_the_auth_limit(tmp_path: Path, fake_time: FakeClock) -> None:
    """Each registration costs an Argon2 hash, and its 409 tells whether a name is taken."""
    settings = {**LIMITS, "auth_rate_limit_per_minute": 2}
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, services):
        codes = [(await http.post("/auth/register", json={})).status_code for _ in range(3)]
        assert codes[:2] != [429, 429]
        assert codes[2] == 429
        assert services.metrics.count(services.metrics.rate_limited, "auth") == 1


async def test_health_and_metrics_are_exempt(tmp_path: Path, fake_time: FakeClock) -> None:
    settings = {**LIMITS, "rate_limit_per_minute": 1, "rate_limit_per_ip_per_minute": 1}
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, _services):
        codes = {(await http.get("/health/live")).status_code for _ in range(5)}
        codes |= {(await http.get("/health/ready")).status_code for _ in range(3)}
        assert codes == {200}
        assert (await http.get("/metrics")).status_code != 429


async def test_rate_limit_enabled_false_turns_it_off(tmp_path: Path) -> None:
    settings = {"rate_limit_per_minute": 1, "rate_limit_per_ip_per_minute": 1}
    async with running_app(tmp_path, rate_limit_enabled=False, **settings) as (http, services):
        assert services.rate_limiter is None
        http.headers.update(await signed_up(http))
        codes = {(await http.get("/accounts")).status_code for _ in range(5)}
        assert codes == {200}


async def test_the_number_of_tracked_clients_is_bounded(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    settings = {
        **LIMITS,
        "rate_limit_max_clients": 3,
        "rate_limit_per_minute": 100,
        "rate_limit_per_client_per_minute": 1,
    }
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, services):
        http.headers.update(await signed_up(http, fake_time))
        for i in range(20):
            response = await http.get("/accounts", headers={"x-client-id": f"c{i}"})
            assert response.status_code == 200
        assert services.rate_limiter is not None
        assert services.rate_limiter.tracked_keys == 3


@pytest.mark.redis
async def test_with_redis_the_limit_is_shared_by_every_process(
    tmp_path: Path,
    fake_time: FakeClock,
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = {
        **LIMITS,
        "rate_limit_per_ip_per_minute": 3,
        "redis_url": SHARED_REDIS_URL,
        "redis_key_prefix": redis_prefix,
    }
    async with (
        running_app(
            tmp_path, f"sqlite:///{tmp_path / 'one.db'}", **settings, parts=clocked(fake_time)
        ) as (one, _),
        running_app(
            tmp_path, f"sqlite:///{tmp_path / 'two.db'}", **settings, parts=clocked(fake_time)
        ) as (two, _),
    ):
        # one IP, one window in Redis for both processes (sign-up leaves the windows empty)
        one.headers.update(await signed_up(one, fake_time))
        two.headers.update(await signed_up(two, fake_time))
        assert (await one.get("/accounts")).status_code == 200
        assert (await two.get("/accounts")).status_code == 200
        assert (await one.get("/accounts")).status_code == 200
        refused = await two.get("/accounts")
        assert refused.status_code == 429
        assert refused.json()["error"].endswith("(ip); retry in 61s")
        assert int(refused.headers["retry-after"]) == 61  # a full minute, and then some
        fake_time.advance(61)
        assert (await two.get("/accounts")).status_code == 200


async def test_while_redis_is_away_limits_are_kept_in_memory(
    tmp_path: Path, fake_time: FakeClock
) -> None:
    settings = {
        **LIMITS,
        "rate_limit_per_minute": 2,
        "redis_url": "redis://127.0.0.1:1/0",
        "redis_timeout_ms": 50,
    }
    async with running_app(tmp_path, **settings, parts=clocked(fake_time)) as (http, services):
        http.headers.update(await signed_up(http, fake_time))
        a = {"x-client-id": "app-a"}
        codes = [(await http.get("/accounts", headers=a)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert services.cache_and_redis.total("redis_errors") >= 1


async def test_the_openapi_document_lists_429_on_limited_routes_only(tmp_path: Path) -> None:
    async with running_app(tmp_path) as (http, _):
        paths = (await http.get("/openapi.json")).json()["paths"]
        deposit = paths["/accounts/{account_id}/deposit"]["post"]["responses"]
        assert "application/problem+json" in deposit["429"]["content"]
        assert "429" in paths["/transfers"]["post"]["responses"]
        assert "429" not in paths["/health/ready"]["get"]["responses"]
