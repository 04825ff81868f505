"""The shard assignment: orphans given out at once, bounded moves per round, counts within
min/max, loads evened past the threshold, and rounds on unchanged inputs that end (no shard
goes back and forth)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from banking_es.shards.assignment import Limits, Move, count_band, plan_moves

NAMES = [f"i{n}" for n in range(6)]


def apply(owners: dict[int, str | None], moves: list[Move]) -> dict[int, str | None]:
    after = dict(owners)
    for move in moves:
        assert after[move.shard] == move.source
        after[move.shard] = move.target
    return after


def counts(owners: dict[int, str | None], live: list[str]) -> dict[str, int]:
    seen = Counter(owner for owner in owners.values() if owner in live)
    return {instance: seen[instance] for instance in live}


@st.composite
def clusters(draw: st.DrawFn) -> tuple[dict[int, str | None], list[str], dict[int, float], Limits]:
    shards = draw(st.integers(1, 48))
    live = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    owner = st.one_of(st.none(), st.sampled_from([*NAMES, "gone"]))
    owners = {shard: draw(owner) for shard in range(shards)}
    weight = st.one_of(st.just(0.0), st.floats(0, 100, allow_nan=False))
    loads = {shard: draw(weight) for shard in range(shards)}
    maximum = draw(st.one_of(st.none(), st.integers(1, 20)))
    limits = Limits(
        min_per_instance=draw(st.integers(0, 4)),
        max_per_instance=maximum,
        threshold=draw(st.sampled_from([0.0, 0.1, 0.2, 0.5])),
        max_moves=draw(st.integers(1, 5)),
    )
    return owners, live, loads, limits


@given(clusters(), st.data())
def test_a_round_gives_out_every_orphan_and_moves_at_most_its_bound(
    cluster: tuple[dict[int, str | None], list[str], dict[int, float], Limits], data: st.DataObject
) -> None:
    owners, live, loads, limits = cluster
    frozen = data.draw(st.sets(st.sampled_from(sorted(owners))))
    moves = plan_moves(owners, live, loads, limits, frozen)
    after = apply(owners, moves)
    assert all(owner in live for owner in after.values())
    assert len({m.shard for m in moves}) == len(moves)
    assert all(m.target in live and m.source != m.target for m in moves)
    rebalanced = [m for m in moves if m.source in live]
    assert len(rebalanced) <= limits.max_moves
    assert not any(m.shard in frozen for m in rebalanced)


@settings(max_examples=60)
@given(clusters())
def test_rounds_on_unchanged_inputs_end_within_the_bounds(
    cluster: tuple[dict[int, str | None], list[str], dict[int, float], Limits],
) -> None:
    owners, live, loads, limits = cluster
    rounds = 0
    while moves := plan_moves(owners, live, loads, limits):
        owners = apply(owners, moves)
        rounds += 1
        assert rounds <= 10 * len(owners), "the rounds do not end"
    shards, instances = len(owners), len(live)
    low, high = count_band(shards, instances, limits)
    if limits.max_per_instance is None or limits.max_per_instance * instances >= shards:
        assert all(low <= c <= high for c in counts(owners, live).values())
        if limits.min_per_instance * instances <= shards:
            assert min(counts(owners, live).values()) >= limits.min_per_instance
        if limits.max_per_instance is not None:
            assert max(counts(owners, live).values()) <= limits.max_per_instance


@given(clusters())
def test_a_balanced_cluster_moves_nothing(
    cluster: tuple[dict[int, str | None], list[str], dict[int, float], Limits],
) -> None:
    owners, live, _, limits = cluster
    shards = sorted(owners)
    even = {shard: live[i % len(live)] for i, shard in enumerate(shards)}
    low, high = count_band(len(shards), len(live), limits)
    if all(low <= c <= high for c in counts(even, live).values()):
        assert plan_moves(even, live, {}, limits) == []


def test_a_cold_start_spreads_the_shards_evenly() -> None:
    moves = plan_moves(dict.fromkeys(range(16)), ["a", "b", "c"], {}, Limits())
    assert sorted(Counter(m.target for m in moves).values()) == [5, 5, 6]


def test_a_dead_instances_shards_all_go_to_the_survivors_in_one_round() -> None:
    owners: dict[int, str | None] = {s: ["a", "b", "c", "d"][s % 4] for s in range(16)}
    moves = plan_moves(owners, ["a", "b", "c"], {}, Limits(max_moves=1))
    assert sorted(m.shard for m in moves) == [3, 7, 11, 15]
    assert {m.source for m in moves} == {"d"}
    assert sorted(Counter(apply(owners, moves).values()).values()) == [5, 5, 6]


def test_a_joining_instance_gets_its_share_a_few_shards_per_round() -> None:
    owners: dict[int, str | None] = {s: ["a", "b", "c"][s % 3] for s in range(16)}
    live = ["a", "b", "c", "d"]
    history = []
    while moves := plan_moves(owners, live, {}, Limits(max_moves=2)):
        assert len(moves) <= 2
        assert all(m.target == "d" for m in moves)
        history.append(moves)
        owners = apply(owners, moves)
    assert Counter(owners.values())["d"] >= 3
    assert len(history) == 2


def test_load_is_evened_out_past_the_threshold_and_not_below_it() -> None:
    owners: dict[int, str | None] = {s: "a" if s < 8 else "b" for s in range(16)}
    hot = {s: (10.0 if s < 8 else 1.0) for s in range(16)}  # a: 80, b: 8
    moves = plan_moves(owners, ["a", "b"], hot, Limits(max_moves=16))
    after = apply(owners, moves)
    load = Counter[str]()
    for shard, owner in after.items():
        assert owner is not None
        load[owner] += hot[shard]
    assert abs(load["a"] - load["b"]) <= 10.0
    assert 6 <= Counter(after.values())["a"] <= 10  # counts stay in their band
    even = dict.fromkeys(range(16), 1.0)
    assert plan_moves(owners, ["a", "b"], even, Limits(max_moves=16)) == []


def test_a_rolling_restart_never_moves_a_shard_again_within_its_cooldown() -> None:
    live = ["a", "b", "c"]
    owners: dict[int, str | None] = {s: live[s % 3] for s in range(16)}
    cooldown = 3
    moved_at: dict[int, int] = {}
    moves_per_restart = []
    tick = 0
    for restarting in live:
        moved = 0
        for present in ([i for i in live if i != restarting], live, live, live, live):
            tick += 1
            frozen = {s for s, t in moved_at.items() if tick - t <= cooldown}
            for move in plan_moves(owners, present, {}, Limits(max_moves=2), frozen):
                if move.source in present:  # a rebalancing move, not a dead owner's shard
                    assert move.shard not in frozen
                owners[move.shard] = move.target
                moved_at[move.shard] = tick
                moved += 1
        moves_per_restart.append(moved)
        low, high = count_band(16, 3, Limits())
        assert all(low <= c <= high for c in Counter(owners.values()).values())
    # The leaver's shards once, and the rejoiner's share once: nothing moves twice.
    assert all(moved <= 6 + 5 for moved in moves_per_restart)
