-- When each shard last arrived by a move between live instances (a handover claimed), by
-- this server's clock: the rebalancer leaves such shards where they are for its cooldown,
-- whichever instance holds the rebalancer lock (shards/manager.py).
ALTER TABLE shard_leases ADD COLUMN moved_at timestamptz;
