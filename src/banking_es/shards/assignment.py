"""Which instance should own which shard: a pure function from the shard map, the live
instances and the shards' loads to a list of moves (no I/O, like `domain/`).

Shards whose owner is gone are given out at once, however many. Then at most `max_moves`
shards move per round, each move (or exchange of two shards, when no single move helps)
chosen to lower, in this order, (1) how far instances' shard counts are outside their band
(the fair share within the threshold, and `min_per_instance` / `max_per_instance`), then
(2) the sum of the squares of the instances' loads, the latter only while the loads differ
by more than `threshold` of their mean. Every step strictly lowers that pair, so rounds on
unchanged inputs end with no move. `frozen` shards (moved recently) stay where they are,
so a shard cannot go back and forth while instances restart one after another.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Move:
    """Hand `shard` from `source` (its recorded owner, alive or not; None: nobody) to
    `target`."""

    shard: int
    source: str | None
    target: str


@dataclass(frozen=True, slots=True)
class Limits:
    """The rebalancing settings (`SHARDS_MIN_PER_INSTANCE`, `SHARDS_MAX_PER_INSTANCE`,
    `SHARD_REBALANCE_THRESHOLD`) and the moves allowed per round."""

    min_per_instance: int = 1
    max_per_instance: int | None = None
    threshold: float = 0.2
    max_moves: int = 2


def count_band(shards: int, instances: int, limits: Limits) -> tuple[int, int]:
    """The shard counts an instance may have without a move: the fair share give or take
    `threshold`, at least `min_per_instance` and at most `max_per_instance` where every
    instance can have that many."""
    fair = shards / instances
    low = max(
        math.floor(fair * (1 - limits.threshold)), min(limits.min_per_instance, shards // instances)
    )
    high = math.ceil(fair * (1 + limits.threshold))
    if limits.max_per_instance is not None:
        high = min(high, limits.max_per_instance)
    return min(low, high), high


def plan_moves(
    owners: Mapping[int, str | None],
    instances: Iterable[str],
    loads: Mapping[int, float],
    limits: Limits,
    frozen: Collection[int] = (),
) -> list[Move]:
    """The moves of one round (module docstring). `owners`: every shard and its recorded
    owner; `instances`: the live ones; `loads`: each shard's recent load (absent: 0)."""
    live = sorted(set(instances))
    if not live:
        return []
    held: dict[str, set[int]] = {instance: set() for instance in live}
    orphans = []
    for shard, owner in sorted(owners.items()):
        if owner is not None and owner in held:
            held[owner].add(shard)
        else:
            orphans.append(shard)

    def load(shard: int) -> float:
        return max(0.0, loads.get(shard, 0.0))

    total = {instance: sum(load(s) for s in held[instance]) for instance in live}
    low, high = count_band(len(owners), len(live), limits)
    moves: list[Move] = []

    def move(shard: int, target: str) -> None:
        source = owners[shard]
        if source is not None and source in held:
            held[source].discard(shard)
            total[source] = sum(load(s) for s in held[source])  # summed again: no drift
        held[target].add(shard)
        total[target] = sum(load(s) for s in held[target])
        moves.append(Move(shard, source, target))

    for shard in sorted(orphans, key=lambda s: (-load(s), s)):  # heaviest first
        move(shard, min(live, key=lambda i: (len(held[i]) >= high, len(held[i]), total[i], i)))

    def outside(count: int) -> int:
        return max(0, low - count) + max(0, count - high)

    stay = set(frozen) | set(orphans)
    budget = limits.max_moves
    while budget > 0:
        mean = sum(total.values()) / len(live)
        spread = max(total.values()) - min(total.values())
        by_load = mean > 0 and spread / mean > limits.threshold
        best: tuple[int, float, int, str] | None = None
        for donor in live:
            given = len(held[donor])
            for receiver in live:
                if receiver == donor:
                    continue
                taken = len(held[receiver])
                band = outside(given - 1) - outside(given) + outside(taken + 1) - outside(taken)
                gap = total[donor] - total[receiver] - _slack(total)
                for shard in held[donor] - stay:
                    weight = load(shard)
                    squares = 2 * weight * (weight + total[receiver] - total[donor])
                    if band < 0 or (band == 0 and by_load and 0 < weight < gap):
                        candidate = (band, squares, shard, receiver)
                        if best is None or candidate < best:
                            best = candidate
        if best is not None:
            _, _, shard, receiver = best
            move(shard, receiver)
            stay.add(shard)
            budget -= 1
            continue
        swap = _best_swap(live, held, total, stay, load) if by_load and budget >= 2 else None
        if swap is None:
            break
        (shard, receiver), (other, donor) = swap
        move(shard, receiver)
        move(other, donor)
        stay |= {shard, other}
        budget -= 2
    return moves


def _slack(total: dict[str, float]) -> float:
    """A difference of loads smaller than this is rounding, not imbalance: without it a
    shard whose load is the whole gap would flip the imbalance back and forth."""
    return 1e-9 * max(1.0, *total.values())


def _best_swap(
    live: list[str],
    held: dict[str, set[int]],
    total: dict[str, float],
    stay: set[int],
    load: Callable[[int], float],
) -> tuple[tuple[int, str], tuple[int, str]] | None:
    """The exchange of two shards between two instances that lowers the sum of the squares
    of their loads most (counts unchanged), when no single move can: a heavier shard of the
    more loaded one for a lighter shard of the other, their difference nearest half the gap.
    """
    best: tuple[float, int, int, str, str] | None = None
    for donor in live:
        for receiver in live:
            slack = _slack(total)
            gap = total[donor] - total[receiver] - slack
            if gap <= 0:
                continue
            theirs = sorted((load(t), t) for t in held[receiver] - stay)
            weights = [weight for weight, _ in theirs]
            for shard in held[donor] - stay:
                mine = load(shard)
                at = bisect_left(weights, mine - gap / 2)
                for weight, other in theirs[max(0, at - 1) : at + 1]:
                    delta = mine - weight
                    if slack < delta < gap:
                        squares = 2 * delta * (delta - gap - slack)
                        candidate = (squares, shard, other, donor, receiver)
                        if best is None or candidate < best:
                            best = candidate
    if best is None:
        return None
    _, shard, other, donor, receiver = best
    return (shard, receiver), (other, donor)
