"""Database access shared by every SQL-backed part: connections, dialects, migrations, leases."""
