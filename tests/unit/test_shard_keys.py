"""An account's shard: stable across processes and releases, and evenly spread."""

from __future__ import annotations

from collections import Counter

from banking_es.shards.keys import shard_of


def test_an_account_maps_to_the_same_shard_in_every_release() -> None:
    # Pinned: a change of the hash would move every stored account to another shard.
    assert [shard_of(f"acc-{i}", 16) for i in range(4)] == [7, 1, 11, 13]
    assert shard_of("00000000-0000-0000-0000-000000000001", 16) == 15


def test_accounts_spread_evenly_over_the_shards() -> None:
    spread = Counter(shard_of(f"account-{i}", 16) for i in range(16_000))
    assert sorted(spread) == list(range(16))
    assert max(spread.values()) < 1.1 * 1000
