"""Registration cannot buy Argon2 work for free: a taken name costs no hash, and new users'
hashes hold at most half of the process's hashing slots, so logins keep their latency."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api_support import App
from tests.auth import PASSWORD, new_username, register
from tests.server import ServerProcess

from banking_es.identity.passwords import Passwords


class CountingHasher:
    """Argon2's hasher, counting the hashes it makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hashed = 0

    def hash(self, password: str) -> str:
        self.hashed += 1
        return str(self.inner.hash(password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_taken_username_or_email_is_refused_before_any_hash(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, services = app
    await register(http, "dora")
    hasher = CountingHasher(services.identity.passwords._hasher)
    monkeypatch.setattr(services.identity.passwords, "_hasher", hasher)
    for username, email in (("DORA", "new@example.com"), ("dora2", "Dora@Example.com")):
        taken = await http.post(
            "/auth/register", json={"username": username, "email": email, "password": PASSWORD}
        )
        assert taken.status_code == 409
        assert taken.json()["code"] == "user_exists"
    assert hasher.hashed == 0
    await register(http, "dora3")
    assert hasher.hashed == 1  # a free name is hashed, once


async def test_registrations_hold_at_most_half_of_the_hashing_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passwords = Passwords(1, 8, slots=4)
    running: list[str] = []
    most = {"register": 0, "all": 0}
    release = threading.Event()

    def slow_hash(password: str) -> str:
        running.append(password)
        most["register"] = max(most["register"], sum(p == "new user" for p in running))
        most["all"] = max(most["all"], len(running))
        release.wait(5)
        running.remove(password)
        return "hash"

    class Hasher:
        hash = staticmethod(slow_hash)

    monkeypatch.setattr(passwords, "_hasher", Hasher())
    flood = [asyncio.create_task(passwords.hash_new_user("new user")) for _ in range(10)]
    await asyncio.sleep(0.2)
    assert most["register"] == 2  # half of 4
    others = [asyncio.create_task(passwords.hash("other")) for _ in range(3)]
    await asyncio.sleep(0.2)
    assert most["all"] == 4  # the other half served the other hashes
    release.set()
    await asyncio.gather(*flood, *others)


@pytest.mark.slow
@pytest.mark.alone  # two latencies compared: another test's load would fall on one only
@pytest.mark.timeout(180)
def test_a_registration_flood_leaves_login_latency_within_twice_its_idle_value(
    tmp_path: Path,
) -> None:
    """30 threads register new users as fast as the server answers (the auth limit is off:
    think of a flood from many addresses); a login's median latency at most doubles."""
    moderate = {"ARGON2_TIME_COST": "2", "ARGON2_MEMORY_COST": "32768"}  # ~tens of ms a hash
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'banking.db'}", workers=1, workdir=tmp_path, **moderate
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            username = new_username()
            user = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
            assert http.post("/auth/register", json=user).status_code == 201
            credentials = {"username": username, "password": PASSWORD}

            def login_latency() -> float:
                started = time.perf_counter()
                assert http.post("/auth/login", json=credentials).status_code == 200
                return time.perf_counter() - started

            login_latency()  # warm up
            idle = [login_latency() for _ in range(7)]
            stop = threading.Event()
            registered: list[int] = []

            def flood() -> None:
                with httpx.Client(base_url=server.url, timeout=60) as own:
                    while not stop.is_set():
                        name = new_username("flood")
                        body: dict[str, Any] = {
                            "username": name,
                            "email": f"{name}@example.com",
                            "password": PASSWORD,
                        }
                        registered.append(own.post("/auth/register", json=body).status_code)

            threads = [threading.Thread(target=flood) for _ in range(30)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(1)  # every thread has a registration in flight
                loaded = statistics.median(login_latency() for _ in range(9))
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            # idle before and after: the host's own load moves meanwhile (a shared machine)
            idle = [*idle, *(login_latency() for _ in range(7))]
        assert set(registered) == {201}
        usual = statistics.median(idle)
        assert loaded <= 2 * usual, f"idle {usual * 1000:.0f} ms, flooded {loaded * 1000:.0f} ms"
    finally:
        server.stop()
