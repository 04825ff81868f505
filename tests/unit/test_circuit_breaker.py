"""The Redis circuit breaker: opens after N failures, half-opens after the reset time."""

from __future__ import annotations

from tests.clock_support import FakeClock

from banking_es.cache.breaker import CircuitBreaker


def test_opens_after_the_configured_number_of_failures_in_a_row() -> None:
    breaker = CircuitBreaker(3, 2.0, clock=FakeClock().time)
    breaker.failure()
    breaker.failure()
    breaker.success()  # resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_half_opens_after_the_reset_time_and_lets_one_probe_through() -> None:
    clock = FakeClock()
    changes: list[str] = []
    breaker = CircuitBreaker(1, 2.0, clock=clock.time, on_change=changes.append)
    breaker.failure()
    clock.advance(1.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # only one probe at a time
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert changes == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_it_again_for_the_whole_reset_time() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(5, 2.0, clock=clock.time)
    for _ in range(5):
        breaker.failure()
    clock.advance(2.0)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    clock.advance(1.0)
    assert not breaker.allow()


def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock.time)
    breaker.failure()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()
