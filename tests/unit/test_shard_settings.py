"""The settings of instances and shards: defaults as API.md states them, bounds checked
with one line naming the variables, the cluster secret never echoed."""

from __future__ import annotations

import pytest

from banking_es.config import SettingsError, load_settings


def test_the_shard_settings_default_to_api_md() -> None:
    settings = load_settings(host="127.0.0.1", port=3001)
    assert (settings.shard_count, settings.shard_lease_ttl) == (16, 10.0)
    assert (settings.shard_rebalance_interval, settings.shard_rebalance_threshold) == (60.0, 0.2)
    assert (settings.shards_min_per_instance, settings.shards_max_per_instance) == (1, None)
    assert settings.effective_instance_url == "http://127.0.0.1:3001"
    assert settings.effective_instance_id  # host name and pid
    assert load_settings(instance_id="api-1").effective_instance_id == "api-1"


def test_a_maximum_below_the_minimum_is_refused_in_one_line() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(shards_min_per_instance=3, shards_max_per_instance=2)
    assert str(refused.value) == (
        "invalid configuration: SHARDS_MAX_PER_INSTANCE must be at least"
        " SHARDS_MIN_PER_INSTANCE (2 < 3)"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("shard_count", 0), ("shard_count", 5000), ("shard_lease_ttl", 0), ("instance_url", "x")],
)
def test_bad_shard_values_name_their_variable(name: str, value: object) -> None:
    with pytest.raises(SettingsError, match=name.upper()):
        load_settings(**{name: value})


def test_the_cluster_secret_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(cluster_secret=["not", "a", "string"], shard_count=0)
    assert "not" not in str(refused.value)
    assert "CLUSTER_SECRET" in str(refused.value)
