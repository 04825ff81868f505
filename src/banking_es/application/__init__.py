"""Application layer: command handlers and queries over the ports (event store, cache, clock)."""
