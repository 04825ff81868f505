"""The event store: contract types, adapters (memory, SQLite, PostgreSQL) and group commit."""
