"""Caches of account state: L1 in-process (and L2 Redis when configured)."""
