"""IdempotencyService: fingerprints, lookups, keys in flight, outcomes without events."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from tests.clock_support import EPOCH, FakeClock

from banking_es.application.errors import IdempotencyInFlight, IdempotencyKeyReused
from banking_es.application.idempotency import IdempotencyService, fingerprint
from banking_es.eventstore.base import IdempotencyRecord
from banking_es.eventstore.memory import MemoryEventStore

TTL_HOURS = 24


@pytest.fixture
def idempotency(store: MemoryEventStore, clock: FakeClock) -> IdempotencyService:
    return IdempotencyService(store, clock, ttl_hours=TTL_HOURS)


# ---- fingerprints --------------------------------------------------------------------------------


def test_fingerprint_is_a_stable_sha256_hex_digest() -> None:
    body = {"amount": "10.00", "description": "rent"}
    first = fingerprint("POST", "/accounts/a/deposit", body)
    assert first == fingerprint("POST", "/accounts/a/deposit", dict(body))
    assert len(first) == 64
    assert int(first, 16) >= 0


def test_fingerprint_ignores_the_order_of_keys_also_when_nested() -> None:
    one = {"a": 1, "b": {"x": 1, "y": [1, {"p": 1, "q": 2}]}}
    two = {"b": {"y": [1, {"q": 2, "p": 1}], "x": 1}, "a": 1}
    assert fingerprint("POST", "/transfers", one) == fingerprint("POST", "/transfers", two)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/accounts/a/deposit", {"amount": "10.00"}),
        ("POST", "/accounts/b/deposit", {"amount": "10.00"}),
        ("POST", "/accounts/a/withdraw", {"amount": "10.00"}),
        ("POST", "/accounts/a/deposit", {"amount": "10.01"}),
        ("POST", "/accounts/a/deposit", {"amount": "10.00", "description": None}),
        ("POST", "/accounts/a/deposit", {"amount": 10}),
        ("POST", "/accounts/a/deposit", {}),
        ("POST", "/accounts/a/deposit", None),
    ],
)
def test_fingerprint_changes_with_method_path_or_any_value(
    method: str, path: str, body: object
) -> None:
    base = fingerprint("POST", "/accounts/a/deposit", {"amount": "10.00"})
    assert fingerprint(method, path, body) != base


def test_fingerprint_takes_decimals_by_their_text() -> None:
    assert fingerprint("POST", "/x", {"amount": Decimal("0.1")}) == fingerprint(
        "POST", "/x", {"amount": "0.1"}
    )
    assert fingerprint("POST", "/x", {"amount": Decimal("0.1")}) != fingerprint(
        "POST", "/x", {"amount": Decimal("0.10")}
    )


# ---- lookup --------------------------------------------------------------------------------------


async def test_lookup_of_an_unknown_key_is_none(idempotency: IdempotencyService) -> None:
    assert await idempotency.lookup("user-1", "k-1", "fp") is None


async def test_lookup_returns_the_stored_record_for_the_same_request(
    idempotency: IdempotencyService, clock: FakeClock
) -> None:
    assert (
        await idempotency.save_outcome("user-1", "k-1", "fp", 404, b'{"code":"not_found"}') is None
    )
    record = await idempotency.lookup("user-1", "k-1", "fp")
    assert record == IdempotencyRecord(
        "user-1",
        "k-1",
        "fp",
        404,
        b'{"code":"not_found"}',
        EPOCH,
        EPOCH + timedelta(hours=TTL_HOURS),
    )


async def test_lookup_with_another_fingerprint_is_key_reused(
    idempotency: IdempotencyService,
) -> None:
    await idempotency.save_outcome("user-1", "k-1", "fp-a", 422, b"{}")
    with pytest.raises(IdempotencyKeyReused) as info:
        await idempotency.lookup("user-1", "k-1", "fp-b")
    assert info.value.code == "idempotency_key_reused"


async def test_keys_are_scoped(idempotency: IdempotencyService) -> None:
    await idempotency.save_outcome("user-1", "k-1", "fp-a", 422, b"{}")
    assert await idempotency.lookup("user-2", "k-1", "fp-b") is None


def test_check_same_request_accepts_the_same_fingerprint_only() -> None:
    record = IdempotencyRecord("s", "k", "fp", 200, b"{}", EPOCH, EPOCH + timedelta(hours=1))
    IdempotencyService.check_same_request(record, "fp")
    with pytest.raises(IdempotencyKeyReused):
        IdempotencyService.check_same_request(record, "other")


# ---- keys in flight ------------------------------------------------------------------------------


async def test_a_key_in_flight_refuses_a_concurrent_request_with_the_same_key(
    idempotency: IdempotencyService,
) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def first() -> str:
        with idempotency.in_flight("user-1", "k-1"):
            inside.set()
            await release.wait()
        return "done"

    task = asyncio.create_task(first())
    await inside.wait()
    with pytest.raises(IdempotencyInFlight) as info, idempotency.in_flight("user-1", "k-1"):
        pass
    assert info.value.code == "idempotency_in_flight"
    with idempotency.in_flight("user-2", "k-1"), idempotency.in_flight("user-1", "k-2"):
        pass  # other scopes and other keys are independent
    release.set()
    assert await task == "done"
    with idempotency.in_flight("user-1", "k-1"):
        pass  # freed once the first finished


def test_a_key_in_flight_is_freed_when_the_request_fails(
    idempotency: IdempotencyService,
) -> None:
    with pytest.raises(RuntimeError), idempotency.in_flight("user-1", "k-1"):
        raise RuntimeError("boom")
    with idempotency.in_flight("user-1", "k-1"):
        pass


# ---- outcomes without events ---------------------------------------------------------------------


async def test_save_outcome_stores_the_record_with_the_ttl(
    idempotency: IdempotencyService, store: MemoryEventStore
) -> None:
    assert idempotency.ttl_seconds == TTL_HOURS * 3600
    assert await idempotency.save_outcome("user-1", "k-1", "fp", 409, b"conflict") is None
    record = await store.get_idempotency("user-1", "k-1", EPOCH)
    assert record is not None
    assert (record.status, record.body) == (409, b"conflict")
    assert record.expires_at - record.created_at == timedelta(hours=TTL_HOURS)


async def test_save_outcome_returns_the_earlier_record_on_conflict(
    idempotency: IdempotencyService, clock: FakeClock
) -> None:
    await idempotency.save_outcome("user-1", "k-1", "fp", 404, b"first")
    clock.advance(60)
    earlier = await idempotency.save_outcome("user-1", "k-1", "fp", 422, b"second")
    assert earlier is not None
    assert (earlier.status, earlier.body, earlier.created_at) == (404, b"first", EPOCH)
    stored = await idempotency.lookup("user-1", "k-1", "fp")
    assert stored == earlier


async def test_an_expired_record_is_forgotten_and_may_be_replaced(
    idempotency: IdempotencyService, clock: FakeClock
) -> None:
    await idempotency.save_outcome("user-1", "k-1", "fp-a", 404, b"old")
    clock.advance(TTL_HOURS * 3600 - 1)
    assert await idempotency.lookup("user-1", "k-1", "fp-a") is not None
    clock.advance(1)
    assert await idempotency.lookup("user-1", "k-1", "fp-a") is None
    assert await idempotency.lookup("user-1", "k-1", "fp-b") is None  # no longer "reused"
    assert await idempotency.save_outcome("user-1", "k-1", "fp-b", 422, b"new") is None
    record = await idempotency.lookup("user-1", "k-1", "fp-b")
    assert record is not None
    assert record.body == b"new"


async def test_purge_removes_only_expired_records(
    idempotency: IdempotencyService, clock: FakeClock
) -> None:
    await idempotency.save_outcome("user-1", "old", "fp", 404, b"")
    clock.advance(3600)
    await idempotency.save_outcome("user-1", "new", "fp", 404, b"")
    clock.advance(TTL_HOURS * 3600 - 3600)
    assert await idempotency.purge() == 1
    assert await idempotency.purge() == 0
    assert await idempotency.lookup("user-1", "new", "fp") is not None
