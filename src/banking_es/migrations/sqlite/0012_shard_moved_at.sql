-- When each shard last arrived by a move between live instances (a handover claimed): the
-- rebalancer leaves such shards where they are for its cooldown (shards/manager.py).
ALTER TABLE shard_leases ADD COLUMN moved_at TIMESTAMPTZ;
