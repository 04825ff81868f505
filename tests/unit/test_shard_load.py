"""A shard's load: commands per second, decayed over about a minute (`shards/load.py`)."""

from __future__ import annotations

import math

import pytest

from banking_es.shards.load import ShardLoads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_steady_rate_reads_as_that_rate() -> None:
    clock = Clock()
    loads = ShardLoads(horizon=60.0, clock=clock)
    for _ in range(600):  # ten minutes of 10 commands a second
        loads.add(3, 10)
        clock.now += 1.0
    assert loads.rate(3) == pytest.approx(10.0, rel=0.02)
    assert loads.rate(4) == 0.0  # the other shards are not touched


def test_a_burst_fades_over_the_horizon() -> None:
    clock = Clock()
    loads = ShardLoads(horizon=60.0, clock=clock)
    loads.add(0, 600)
    assert loads.rate(0) == pytest.approx(10.0)
    clock.now += 60.0
    assert loads.rate(0) == pytest.approx(10.0 / math.e)
    clock.now += 600.0
    assert loads.rate(0) < 0.001


def test_commands_add_to_what_is_left_of_the_earlier_ones() -> None:
    clock = Clock()
    loads = ShardLoads(horizon=60.0, clock=clock)
    loads.add(1, 60)
    clock.now += 60.0
    loads.add(1, 60)
    assert loads.rate(1) == pytest.approx(1.0 / math.e + 1.0)


def test_a_seeded_shard_starts_at_the_recorded_rate_and_a_forgotten_one_at_zero() -> None:
    clock = Clock()
    loads = ShardLoads(horizon=60.0, clock=clock)
    loads.seed(5, 7.5)
    assert loads.rate(5) == pytest.approx(7.5)
    loads.add(5, 60)
    assert loads.rate(5) == pytest.approx(8.5)
    loads.forget(5)
    assert loads.rate(5) == 0.0
