"""The windows a server keeps without Redis: in memory, and in a file its workers share."""

from __future__ import annotations

from pathlib import Path

import pytest

from banking_es.ratelimit.windows import MemoryWindows, SharedWindows, Windows


@pytest.fixture(params=["memory", "shared"])
def windows(request: pytest.FixtureRequest, tmp_path: Path) -> Windows:
    if request.param == "memory":
        return MemoryWindows(100)
    SharedWindows.create(tmp_path / "w", 100)
    return SharedWindows(tmp_path / "w")


def test_a_window_admits_its_amount_then_says_when_it_admits_again(windows: Windows) -> None:
    now = 1_000_000.0
    assert [windows.hit("k", 3, 60, now + i) for i in range(3)] == [None] * 3
    again = windows.hit("k", 3, 60, now + 10)
    assert again is not None
    assert now + 59 <= again <= now + 62  # the first admission leaves the window
    assert windows.hit("k", 3, 60, again + 0.01) is None
    assert windows.hit("other", 3, 60, now + 10) is None


def test_no_window_of_the_shared_file_ever_admits_more_than_its_amount(tmp_path: Path) -> None:
    SharedWindows.create(tmp_path / "w", 100)
    workers = [SharedWindows(tmp_path / "w"), SharedWindows(tmp_path / "w")]
    now, admitted = 1_000_000.0, []
    for step in range(2000):  # 2000 tries over 200 s, alternately from each worker
        at = now + step * 0.1
        if workers[step % 2].hit("k", 10, 60, at) is None:
            admitted.append(at)
    assert all(sum(1 for t in admitted if s <= t < s + 60) <= 10 for s in admitted)
    assert len(admitted) >= 30  # and it does admit, about 10 a minute


def test_the_shared_file_tracks_a_bounded_number_of_keys(tmp_path: Path) -> None:
    SharedWindows.create(tmp_path / "w", 16)
    windows = SharedWindows(tmp_path / "w")
    for i in range(100):
        assert windows.hit(f"k{i}", 1, 60, 1_000_000.0 + i) is None
    assert windows.tracked_keys == 16


def test_a_requests_windows_are_taken_in_turn_up_to_the_first_full_one(windows: Windows) -> None:
    now = 1_000_000.0
    assert windows.hit_all([("a", 5, 60), ("b", 1, 60)], now) is None
    refused = windows.hit_all([("a", 5, 60), ("b", 1, 60), ("c", 5, 60)], now + 1)
    assert refused is not None
    index, again = refused
    assert index == 1
    assert now + 59 <= again <= now + 62
    # "a" kept the hit taken before "b" refused (as one `hit` after another), "c" got none.
    assert [windows.hit("a", 5, 60, now + 2) for _ in range(3)] == [None, None, None]
    assert windows.hit("a", 5, 60, now + 2) is not None
    assert [windows.hit("c", 5, 60, now + 2) for _ in range(5)] == [None] * 5


def test_a_key_whose_slot_another_worker_reused_starts_a_new_window(tmp_path: Path) -> None:
    SharedWindows.create(tmp_path / "w", 8)  # one set of 8 slots
    mine, other = SharedWindows(tmp_path / "w"), SharedWindows(tmp_path / "w")
    now = 1_000_000.0
    assert mine.hit("k", 1, 60, now) is None
    assert mine.hit("k", 1, 60, now + 1) is not None
    for i in range(8):  # the other worker's keys take every slot, "k"'s (the stalest) too
        assert other.hit(f"o{i}", 1, 60, now + 2 + i) is None
    assert mine.hit("k", 1, 60, now + 20) is None  # its window was forgotten, not mixed up
    assert other.hit("o7", 1, 60, now + 21) is not None  # and the others' are intact
