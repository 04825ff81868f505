"""IdempotencyService: fingerprints, stored answers, keys in flight, refusals without events."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from tests.clock_support import EPOCH, FakeClock

from banking_es.application.context import CommandContext
from banking_es.application.errors import IdempotencyInFlight, IdempotencyKeyReused, NotFound
from banking_es.application.idempotency import IdempotencyKey, IdempotencyService, fingerprint
from banking_es.application.results import STORED_ANSWER
from banking_es.domain.errors import InvalidAmount
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


# ---- stored answers ------------------------------------------------------------------------------

CTX = CommandContext("user-1", "req-1")


def key(name: str = "k-1", fp: str = "fp", scope: str = "user-1") -> IdempotencyKey:
    return IdempotencyKey(scope, name, fp)


class Refuse:
    """An action that counts its calls and refuses with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def __call__(self, context: CommandContext) -> object:
        self.calls += 1
        raise self.error


async def test_without_a_key_a_refusal_is_raised_and_nothing_is_stored(
    idempotency: IdempotencyService, store: MemoryEventStore
) -> None:
    with pytest.raises(NotFound):
        await idempotency.run(Refuse(NotFound("account a not found")), CTX, None)
    assert await idempotency.purge() == 0
    assert await store.get_idempotency("user-1", "k-1", EPOCH) is None


async def test_a_remembered_refusal_is_stored_with_the_ttl_and_replayed(
    idempotency: IdempotencyService, store: MemoryEventStore
) -> None:
    action = Refuse(NotFound("account a not found"))
    first = await idempotency.run(action, CTX, key())
    assert isinstance(first.refusal, NotFound)
    assert not first.replayed
    record = await store.get_idempotency("user-1", "k-1", EPOCH)
    assert record is not None
    assert record.status == STORED_ANSWER
    assert record.expires_at - record.created_at == timedelta(hours=TTL_HOURS)
    again = await idempotency.run(action, CTX, key())
    assert action.calls == 1
    assert again.replayed
    assert type(again.refusal) is NotFound
    assert str(again.refusal) == "account a not found"


async def test_another_request_with_the_key_is_key_reused(
    idempotency: IdempotencyService,
) -> None:
    await idempotency.run(Refuse(NotFound("x")), CTX, key(fp="fp-a"))
    with pytest.raises(IdempotencyKeyReused) as info:
        await idempotency.run(Refuse(NotFound("x")), CTX, key(fp="fp-b"))
    assert info.value.code == "idempotency_key_reused"


async def test_keys_are_scoped(idempotency: IdempotencyService) -> None:
    await idempotency.run(Refuse(NotFound("x")), CTX, key(fp="fp-a"))
    action = Refuse(NotFound("y"))
    other = await idempotency.run(action, CTX, key(fp="fp-b", scope="user-2"))
    assert (action.calls, other.replayed) == (1, False)


async def test_a_malformed_request_is_not_remembered(
    idempotency: IdempotencyService, store: MemoryEventStore
) -> None:
    action = Refuse(InvalidAmount("amount must be positive"))
    for _ in range(2):
        with pytest.raises(InvalidAmount):
            await idempotency.run(action, CTX, key())
    assert action.calls == 2
    assert await store.get_idempotency("user-1", "k-1", EPOCH) is None


# ---- keys in flight ------------------------------------------------------------------------------


async def test_a_key_in_flight_refuses_a_concurrent_request_with_the_same_key(
    idempotency: IdempotencyService,
) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def slow(context: CommandContext) -> object:
        inside.set()
        await release.wait()
        raise NotFound("done")

    task = asyncio.create_task(idempotency.run(slow, CTX, key()))
    await inside.wait()
    with pytest.raises(IdempotencyInFlight) as info:
        await idempotency.run(Refuse(NotFound("x")), CTX, key())
    assert info.value.code == "idempotency_in_flight"
    # other scopes and other keys are independent
    await idempotency.run(Refuse(NotFound("x")), CTX, key(scope="user-2"))
    await idempotency.run(Refuse(NotFound("x")), CTX, key("k-2"))
    release.set()
    assert str((await task).refusal) == "done"
    assert (await idempotency.run(Refuse(NotFound("x")), CTX, key())).replayed


async def test_a_key_in_flight_is_freed_when_the_request_fails(
    idempotency: IdempotencyService,
) -> None:
    with pytest.raises(RuntimeError):
        await idempotency.run(Refuse(RuntimeError("boom")), CTX, key())
    action = Refuse(NotFound("x"))
    assert not (await idempotency.run(action, CTX, key())).replayed
    assert action.calls == 1


# ---- expiry --------------------------------------------------------------------------------------


async def test_an_expired_record_is_forgotten_and_may_be_replaced(
    idempotency: IdempotencyService, clock: FakeClock
) -> None:
    await idempotency.run(Refuse(NotFound("old")), CTX, key(fp="fp-a"))
    clock.advance(TTL_HOURS * 3600 - 1)
    assert (await idempotency.run(Refuse(NotFound("x")), CTX, key(fp="fp-a"))).replayed
    clock.advance(1)
    fresh = await idempotency.run(Refuse(NotFound("new")), CTX, key(fp="fp-b"))  # not "reused"
    assert not fresh.replayed
    again = await idempotency.run(Refuse(NotFound("x")), CTX, key(fp="fp-b"))
    assert str(again.refusal) == "new"


async def test_purge_removes_only_expired_records(
    idempotency: IdempotencyService, clock: FakeClock
) -> None:
    await idempotency.run(Refuse(NotFound("x")), CTX, key("old"))
    clock.advance(3600)
    await idempotency.run(Refuse(NotFound("x")), CTX, key("new"))
    clock.advance(TTL_HOURS * 3600 - 3600)
    assert await idempotency.purge() == 1
    assert await idempotency.purge() == 0
    assert (await idempotency.run(Refuse(NotFound("x")), CTX, key("new"))).replayed
