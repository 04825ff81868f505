"""The lock-out's rules (`NameState`), on the fake clock: what a reservation, a failure and
a success do to one name's count and lock."""

from __future__ import annotations

from datetime import timedelta

from tests.clock_support import FakeClock

from banking_es.identity.lockout import NameState

MAX = 3
WINDOW = timedelta(seconds=60)


def fail(state: NameState, clock: FakeClock, ticket: str) -> NameState:
    state = state.current(clock.now(), WINDOW)
    assert state.wait(clock.now(), MAX, WINDOW) is None, "a check should be allowed"
    state = state.reserved(ticket, clock.now())
    return state.failed(ticket, clock.now(), MAX, WINDOW)


def wait(state: NameState, clock: FakeClock) -> int | None:
    return state.current(clock.now(), WINDOW).wait(clock.now(), MAX, WINDOW)


def test_the_nth_failure_locks_until_it_plus_the_window(clock: FakeClock) -> None:
    state = NameState()
    for n in range(MAX):
        state = fail(state, clock, f"t{n}")
        clock.advance(10)
    clock.advance(-10)
    assert state.locked_until == clock.now() + WINDOW
    assert wait(state, clock) == 60
    clock.advance(59.5)
    assert wait(state, clock) == 1


def test_failures_count_within_a_sliding_window(clock: FakeClock) -> None:
    state = fail(NameState(), clock, "a")  # t=0
    clock.advance(30)
    state = fail(state, clock, "b")  # t=30
    clock.advance(31)
    state = fail(state, clock, "c")  # t=61: the first one slid out
    assert state.locked_until is None
    assert len(state.current(clock.now(), WINDOW).attempts) == 2
    clock.advance(5)
    state = fail(state, clock, "d")  # t=66: b, c, d within 60 s
    assert state.locked_until == clock.now() + WINDOW


def test_the_count_starts_again_when_the_lock_ends(clock: FakeClock) -> None:
    state = NameState()
    for n in range(MAX):
        state = fail(state, clock, f"t{n}")
    clock.advance(WINDOW.total_seconds())
    assert wait(state, clock) is None
    for n in range(MAX - 1):  # one short of a lock again
        state = fail(state, clock, f"u{n}")
    assert state.locked_until is None
    assert wait(state, clock) is None


def test_a_success_starts_the_count_again(clock: FakeClock) -> None:
    state = NameState()
    for n in range(MAX - 1):
        state = fail(state, clock, f"t{n}")
    state = state.reserved("ok", clock.now()).succeeded("ok")
    assert state == NameState()
    for n in range(MAX - 1):
        state = fail(state, clock, f"u{n}")
    assert state.locked_until is None


def test_checks_in_flight_fill_the_window_before_any_answer(clock: FakeClock) -> None:
    state = NameState()
    for n in range(MAX):
        assert wait(state, clock) is None
        state = state.reserved(f"t{n}", clock.now())
    assert wait(state, clock) == 60  # refused while the first three are being checked
    state = state.failed("t0", clock.now(), MAX, WINDOW)
    assert state.locked_until is None  # one failure so far
    state = state.reserved("x", clock.now()) if wait(state, clock) is None else state
    assert len(state.attempts) == MAX


def test_a_success_keeps_the_reservations_of_checks_still_in_flight(clock: FakeClock) -> None:
    state = NameState()
    for ticket in ("a", "b", "ok"):
        state = state.reserved(ticket, clock.now())
    state = state.failed("a", clock.now(), MAX, WINDOW).succeeded("ok")
    assert [a.ticket for a in state.attempts] == ["b"]


def test_a_check_abandoned_in_flight_slides_out_with_the_window(clock: FakeClock) -> None:
    state = NameState()
    for n in range(MAX):
        state = state.reserved(f"t{n}", clock.now())
    clock.advance(WINDOW.total_seconds() + 1)
    assert wait(state, clock) is None
    assert state.current(clock.now(), WINDOW) == NameState()
