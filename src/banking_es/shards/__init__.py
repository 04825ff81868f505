"""Shards: accounts spread over a fixed number of shards, each written by the one instance
holding its lease. `keys` maps an account to its shard, `leases` keeps the shard map in the
database (epochs, expiry by the database's clock, the instances seen), `assignment` decides
which instance should own which shard. docs/architecture.md, "Many instances"."""
