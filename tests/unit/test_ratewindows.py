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
