-- The owner that released a shard for a handover: if the target stops before it claims the
-- shard, the move is called off and the shard goes back to this owner (shards/leases.py).
ALTER TABLE shard_leases ADD COLUMN released_by text;
